"""Webhooks: signed delivery of received messages to agents' endpoints (issue 14)."""
