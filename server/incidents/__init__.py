"""Incidents: emergency playbooks opened from alarms or by staff, their steps, escalation and
the outage grouping."""
