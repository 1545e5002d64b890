"""Notifications: the outbox (written with the change it tells about) and signed webhooks."""
