"""Who may do what: peer identity (auth), roles and the pure decision (policy), grants,
the hash-chained audit log (audit), and the gate every request passes (gate)."""
