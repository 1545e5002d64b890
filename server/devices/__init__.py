"""Devices (sensors and gateways), their inbox of events, and dead letters."""
