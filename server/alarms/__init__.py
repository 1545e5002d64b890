"""Alarms raised by devices: ingest of device messages, listing and acknowledgement."""
