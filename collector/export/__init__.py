"""Off-host export sinks, after redaction: OTLP (otlp.py) and JSON log lines (jsonlog.py).

Import otlp.py only when [export.otlp] is enabled: it loads the OpenTelemetry SDK.
"""

from __future__ import annotations

from collector.errors import PeriscopeError


class ExportError(PeriscopeError):
    """An exporter cannot start (its file cannot be opened, journald support is missing)."""
