"""The periscoped process: wiring and the run loop (main), `--check` (check), systemd
notify and journald logging (notify, logs), and `make demo` (demo)."""
