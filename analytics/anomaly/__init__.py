"""Unusual-access detection over the access log: explanation-based auditing, rules and an isolation forest.

Input is an events table (``events.py``) and what can explain an access (``explain.AuditContext``);
output is a list of :class:`~ciphercare.analytics.anomaly.detector.Flag`. Independent of the services:
they feed it events and show its flags.
"""

from ciphercare.analytics.anomaly.detector import AccessAnomalyDetector, DetectorSettings, Flag
from ciphercare.analytics.anomaly.events import EVENT_COLUMNS, MISUSE_KINDS, events_from_records
from ciphercare.analytics.anomaly.explain import AuditContext, explain

__all__ = ["EVENT_COLUMNS", "MISUSE_KINDS", "AccessAnomalyDetector", "AuditContext", "DetectorSettings", "Flag",
           "events_from_records", "explain"]
