"""The client socket: listening (listen), framing and dispatch (server), one handler per
operation (handlers/), live trace sessions (sessions) and Prometheus metrics (metrics)."""
