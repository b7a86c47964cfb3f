"""periscope, the client: flags and examples (parser, examples), requests (client, commands),
human output (render). `periscope` and `python -m collector.cli` both run commands.main."""
