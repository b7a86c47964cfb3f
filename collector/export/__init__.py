"""Off-host export sinks: OTLP (otlp.py) and JSON log lines (jsonlog.py), after redaction."""
