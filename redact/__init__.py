"""Redaction engine: every payload byte passes through here before it leaves the decode buffer."""
