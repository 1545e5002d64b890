"""The live feed: what supervisors see change as it happens (SSE over LISTEN/NOTIFY)."""
