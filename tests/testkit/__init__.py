"""The ciphercare test kit: helpers shared by the test suites, importable as ``testkit.*`` (tests/ is on
pytest's pythonpath). Conftest files only turn these into fixtures."""
