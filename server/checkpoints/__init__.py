"""Checkpoints: where guards and technicians prove they were, by QR code or NFC tag."""
