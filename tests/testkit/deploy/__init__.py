"""Deployment test kit: the chart (``chart``) and the container recipe's rules (``recipe``)."""
