"""Service orders: lifecycle, SLA, technicians and proactive call tasks (built on rule detections)."""
