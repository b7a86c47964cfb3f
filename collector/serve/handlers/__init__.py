"""One handler per operation, grouped by what they serve: status and identity, stored
queries, grants, the audit log, and live trace sessions (the one streaming handler)."""
