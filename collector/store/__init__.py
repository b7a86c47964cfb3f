"""The embedded event store: SQLite schema, migration, batched writes and retention
(store), and stored queries as SQL under an access decision (query)."""
