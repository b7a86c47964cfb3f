"""Who may do what: peer identity (auth) and its identity-provider step-up (idp), roles and
the pure decision (policy, decide), grants, access requests and break-glass (requests, desk,
alerts), the hash-chained audit log and the daemon's life in it (audit, lifecycle), and the
gate every request passes (gate)."""
