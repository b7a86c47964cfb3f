"""periscope's daemon and client: host facts (proc), the data path (capture, store),
access control (access), the socket server (serve) and the process (daemon)."""
