"""Alerts for a site's supervisors: missed rounds, SLA breaches, silent devices."""
