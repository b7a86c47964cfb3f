"""periscope daemon and client: enrichment, streams, store, access control and the socket server."""
