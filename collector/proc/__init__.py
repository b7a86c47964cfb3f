"""Host facts read from procfs and cgroupfs, with both roots injectable:
per-process facts (facts.Enricher) and selector -> processes resolution (resolve.Resolver)."""
