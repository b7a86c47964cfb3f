"""One error hierarchy for periscope; boundaries translate foreign errors into it."""

from __future__ import annotations


class PeriscopeError(Exception):
    """Base of every error periscope raises on purpose."""


class ConfigError(PeriscopeError):
    """The daemon config is invalid (message names the key)."""
