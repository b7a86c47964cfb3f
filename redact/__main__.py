"""`python -m redact [--protocol P] < in > out`: redact stdin to stdout, streaming."""

from __future__ import annotations

import argparse
import os
import sys

from redact.engine import Redactor
from redact.rules import PROTOCOLS, RuleError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redact",
        description="Redact secrets and PII from stdin, write the result to stdout.",
        epilog="examples:\n  python -m redact --protocol http < request.txt\n"
        "  journalctl -u checkout -o cat | python -m redact --ips > safe.log\n"
        "  REDACT_PSEUDONYMIZE_KEY=... python -m redact < events.jsonl\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", "-p", choices=sorted(PROTOCOLS), default=None)
    parser.add_argument("--rules", help="TOML rule file instead of the built-in rules")
    parser.add_argument("--ips", action="store_true", help="also redact IP addresses")
    parser.add_argument("--sql-literals", action="store_true", help="mask every SQL string")
    parser.add_argument(
        "--pseudonymize-key",
        default=os.environ.get("REDACT_PSEUDONYMIZE_KEY"),
        help="emit HMAC tokens keyed with this value (default: $REDACT_PSEUDONYMIZE_KEY; "
        "the environment keeps it out of the process list)",
    )
    parser.add_argument("--counters", action="store_true", help="print hit counters to stderr")
    args = parser.parse_args(argv)
    opts = {
        "pseudonymize_key": args.pseudonymize_key,
        "redact_ips": args.ips,
        "sql_string_literals": args.sql_literals,
    }
    try:
        r = Redactor.from_file(args.rules, **opts) if args.rules else Redactor.default(**opts)
    except (RuleError, OSError) as err:
        print(f"redact: {err}", file=sys.stderr)
        return 2
    stream = r.stream(args.protocol)
    out = sys.stdout.buffer
    read = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
    while chunk := read(65536):
        out.write(stream.feed(chunk))
    out.write(stream.close())
    out.flush()
    if args.counters:
        for rid, n in sorted(r.counters().items()):
            if n:
                print(f"{rid} {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
