"""The data path: targets and probes (tracer), kernel records -> redacted, enriched
events (pipeline, streams) and what each capture level may see of an event (events.narrow)."""
