"""Human output of the client: event rows, tables, the status summary, and loss names."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TextIO

import orjson

from collector import protocol
from collector.selectors import format_duration

# Every counter that means "something was not delivered", with what it means to an SRE:
# protocol.LOSSES, the one table the daemon reads the names from too.
LOSS_TEXT = protocol.LOSS_TEXT
_DECODE_PREFIX = "decode_"  # decode_<reason>: records the decoder rejected, one per reason


def loss_text(name: str) -> str:
    if name.startswith(_DECODE_PREFIX):
        return f"records not decodable ({name[len(_DECODE_PREFIX):]})"
    return LOSS_TEXT.get(name, name)


def is_loss(name: str) -> bool:
    return name in LOSS_TEXT or name.startswith(_DECODE_PREFIX)


def losses_line(losses: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {loss_text(k)}" for k, n in losses.items())


# -- small formats ----------------------------------------------------------------
def fmt_time(ts: float, with_date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return time.strftime(fmt, time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _today(ts: float) -> bool:
    return time.localtime(ts)[:3] == time.localtime()[:3]


def fmt_bytes(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def json_lines(result: Any, out: TextIO = sys.stdout) -> None:
    """--json: a list is one object per line, anything else one line."""
    for item in result if isinstance(result, list) else [result]:
        out.write(orjson.dumps(item).decode() + "\n")
    out.flush()


# -- events -------------------------------------------------------------------------
def detail(ev: dict[str, Any]) -> str:
    kind = ev["kind"]
    if kind == "exec":
        return f"{ev.get('filename', '')} [{ev.get('argv', '')}]"
    if kind == "fork":
        return f"child {ev['child']}"
    if kind == "exit":
        return f"code {ev['code']}"
    if kind in ("l7", "conn"):
        return _record_detail(ev)
    parts = [f"{key}={ev[key]}" for key in ("path", "flags", "family", "peer", "direction",
                                             "size") if key in ev]
    if "payload" in ev:
        parts.append(f'"{ev["payload"][:120]}"')
    if ev.get("truncated"):
        parts.append("(truncated)")
    return " ".join(parts)


def _record_detail(ev: dict[str, Any]) -> str:
    """A connection or L7 record on one line of a live trace."""
    if ev["kind"] == "conn":
        parts = [ev.get("state", ""), ev.get("role") or "", ev.get("local") or "",
                 "->" if ev.get("peer") else "", ev.get("peer") or "", ev.get("proto") or "",
                 f"in={ev.get('bytes_in', 0)} out={ev.get('bytes_out', 0)}"]
        if "duration_ms" in ev:
            parts.append(f"{ev['duration_ms']:.1f}ms")
        if ev.get("errors"):
            parts.append("errors=" + ",".join(ev["errors"]))
        if ev.get("preexisting"):
            parts.append("pre-existing " + str(ev.get("tcp_state") or ""))
        return " ".join(p for p in parts if p)
    what = " ".join(str(ev[k]) for k in ("method", "path", "query", "command", "qtype",
                                         "qname") if k in ev)
    outcome = ev.get("status", ev.get("rcode", ""))
    lat = f" {ev['latency_ms']:.1f}ms" if "latency_ms" in ev else ""
    flags = "".join(f" ({f})" for f in ("partial", "tls") if ev.get(f))
    return f"{ev.get('proto', '')} {what[:100]} -> {outcome}{lat}" + (
        f" peer={ev['peer']}" if ev.get("peer") else "") + flags


_EVENT = "{:<{tw}} {:>7} {:<15} {:<9} {:>4} {:>8} {:>9}  {}"


class EventPrinter:
    """Event rows under one header; a date in the time column when rows span days."""

    def __init__(self, with_date: bool = False, out: TextIO = sys.stdout) -> None:
        self.with_date = with_date
        self.tw = 23 if with_date else 12
        self.out = out

    def header(self) -> None:
        print(_EVENT.format("TIME", "PID", "COMM", "SYSCALL", "FD", "RET", "LAT(us)",
                            "DETAIL", tw=self.tw), file=self.out)

    def row(self, ev: dict[str, Any]) -> None:
        ret = ev.get("errno") or ev.get("ret", "")
        print(_EVENT.format(fmt_time(ev["ts"], self.with_date), ev["pid"],
                            ev.get("comm", "?")[:15], ev.get("syscall", ev["kind"]),
                            ev.get("fd", ""), ret, ev.get("latency_us", ""), detail(ev),
                            tw=self.tw), file=self.out, flush=True)


def events(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(no stored events match)")
        return
    p = EventPrinter(with_date=not all(_today(r["ts"]) for r in rows))
    p.header()
    for r in rows:
        p.row(r)


# -- tables ---------------------------------------------------------------------------
class Col(NamedTuple):
    key: str
    title: str
    fmt: Callable[[Any], str] = str
    right: bool = False
    width: int = 60  # longer values are cut


def table(rows: Iterable[dict[str, Any]], cols: list[Col], empty: str = "(none)") -> None:
    cells = [[c.fmt(r[c.key]) if r.get(c.key) is not None else "" for c in cols]
             for r in rows]
    if not cells:
        print(empty)
        return
    width = [min(c.width, max(len(c.title), *(len(row[i]) for row in cells)))
             for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        return "  ".join((v[:w].rjust(w) if c.right else v[:w].ljust(w))
                         for v, w, c in zip(values, width, cols, strict=True)).rstrip()

    print(line([c.title for c in cols]))
    for row in cells:
        print(line(row))


def event_page(page: dict[str, Any]) -> None:
    """events with "page": the rows, then (on stderr) how to read the older ones."""
    events(page["events"])
    page_note(page)


def page_note(page: dict[str, Any]) -> None:
    if page.get("more"):
        print(f"periscope: showing the newest {len(page['events'])} that match; older ones: "
              f"add --before {page['next']} (or narrow with --since/--until)", file=sys.stderr)


def _us(us: float | None) -> str:
    return "" if us is None else f"{us:,.1f}" if us < 1000 else f"{us / 1000:,.2f}ms"


def top(rows: list[dict[str, Any]]) -> None:
    table(rows, [Col("pid", "PID", right=True), Col("comm", "COMM"),
                 Col("syscall", "SYSCALL"), Col("count", "COUNT", right=True),
                 Col("errors", "ERRORS", right=True), Col("bytes", "BYTES", fmt_bytes, True),
                 Col("p50_us", "P50(µs)", _us, True), Col("p99_us", "P99(µs)", _us, True),
                 Col("total_us", "TOTAL(ms)", lambda us: f"{us / 1000:.3f}", True)],
          empty="(no stored syscalls match)")


def errors(rows: list[dict[str, Any]]) -> None:
    table(rows, [Col("count", "COUNT", right=True), Col("errno", "ERRNO"),
                 Col("syscall", "SYSCALL"), Col("detail", "PATH/PEER"),
                 Col("pid", "PID", right=True), Col("comm", "COMM"),
                 Col("last", "LAST", lambda ts: fmt_time(ts, not _today(ts)))],
          empty="(no stored failed calls match)")


def _until(ts: float) -> str:
    left = ts - time.time()
    return f"{fmt_time(ts, not _today(ts))[:-4]} (in {format_duration(left)})" if left > 0 \
        else "expired"


def grants(rows: list[dict[str, Any]]) -> None:
    table(rows, [Col("id", "ID"), Col("principal", "WHO"), Col("target", "TARGET"),
                 Col("level", "LEVEL"), Col("expires", "UNTIL", _until),
                 Col("created_by", "BY"), Col("reason", "REASON")],
          empty="(no active grants)")


def grant_added(g: dict[str, Any]) -> None:
    print(f"grant {g['id']}: {g['principal']} may trace {g['target']} at {g['level']} "
          f"until {_until(g['expires'])}; reason: {g['reason']}")


def revoked(r: dict[str, Any]) -> None:
    if isinstance(r["revoked"], list):  # grant revoke --all
        print(f"revoked {_n(len(r['revoked']), 'grant')}"
              + (f" ({', '.join(r['revoked'])})" if r["revoked"] else "")
              + f"; {_n(r['sessions_ended'], 'session')} ended")
        return
    print(f"revoked grant {r['revoked']}; {_n(r['sessions_ended'], 'session')} ended")


def _audit_detail(rec: dict[str, Any]) -> str:
    parts = [str(rec.get("reason", ""))] if rec.get("reason") else []
    if rec.get("args"):
        parts.append(orjson.dumps(rec["args"]).decode())
    if rec.get("session"):
        parts.append(f"session {rec['session']}: {rec.get('events', 0)} events, "
                     f"{fmt_bytes(rec.get('bytes', 0))}")
    extra = {k: v for k, v in rec.items() if k not in _AUDIT_SHOWN}
    if extra and rec.get("kind") != "request":
        parts.append(orjson.dumps(extra).decode())
    return "; ".join(parts)


_AUDIT_SHOWN = {"seq", "time", "user", "uid", "op", "kind", "decision", "reason", "args",
                "session", "events", "bytes", "hash", "prev_hash", "pid", "exe"}


def audit(rows: list[dict[str, Any]]) -> None:
    shown = [{"seq": r.get("seq"), "time": r.get("time"), "user": r.get("user"),
              "what": r.get("op") if r.get("kind") == "request" else r.get("kind"),
              "decision": r.get("decision"), "detail": _audit_detail(r)} for r in rows]
    table(shown, [Col("seq", "SEQ", right=True),
                  Col("time", "TIME", lambda t: fmt_time(t, True)), Col("user", "USER"),
                  Col("what", "WHAT"), Col("decision", "DECISION"),
                  Col("detail", "DETAIL", width=160)],
          empty="(the audit log is empty)")


# -- single results ---------------------------------------------------------------------
def status(s: dict[str, Any]) -> None:
    """The daemon's health in the order an on-call reads it."""
    probes = (f"probes attached (loaded in {s.get('probe_load_s', 0):.1f}s)"
              if s.get("probes_attached") else "probes detached (they attach at a session)")
    print(f"periscoped: up {format_duration(s.get('uptime_s', 0))}, {probes}, "
          f"{s.get('stored_events', 0):,} events stored")
    targets = [f"{t['kind']}:{t['value']} ({_n(t['sessions'], 'session')}"
               + (f", payload up to {t['payload_cap']} B" if t.get("payload_cap") else "") + ")"
               for t in s.get("targets", [])]
    print(f"targets:    {', '.join(targets) if targets else 'none'}")
    sessions = [f"{x['id']} {x['user']}: {x['events']:,} events, ends in "
                f"{format_duration(x['deadline'] - time.time())}" for x in s.get("sessions", [])]
    print(f"sessions:   {sessions[0] if sessions else 'none'}")
    for line in sessions[1:]:
        print(f"            {line}")
    counted: dict[str, int] = {}
    for part in ("kernel", "pipeline", "router"):
        counted.update(s.get(part) or {})
    counted["tls_attach_failed"] = s.get("tls_attach_failed", 0)
    losses = {k: v for k, v in counted.items() if is_loss(k) and v}
    lines = [f"{n:,} {loss_text(k)}" for k, n in losses.items()] or ["none counted"]
    print(f"losses:     {lines[0]}")
    for line in lines[1:]:
        print(f"            {line}")
    server = s.get("server") or {}
    faults = {k[len("fault_"):]: v for k, v in server.items() if k.startswith("fault_") and v}
    print(f"clients:    {server.get('connections', 0):,} connections" + (
        "; refused: " + ", ".join(f"{n:,} {k}" for k, n in faults.items()) if faults else ""))
    head = s.get("audit_head") or [0, ""]
    print(f"audit:      {head[0]:,} records, head {str(head[1])[:12]}")
    export = s.get("export")
    if export:  # only when the daemon has an exporter enabled
        c = export.get("counters") or {}
        print(f"export:     to {', '.join(export.get('to', []))}; "
              f"{c.get('export_sent', 0) + c.get('jsonlog_written', 0):,} sent, "
              f"{c.get('export_dropped', 0) + c.get('jsonlog_dropped', 0):,} dropped, "
              f"{c.get('export_failed', 0) + c.get('jsonlog_failed', 0):,} failed")


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def whoami(w: dict[str, Any]) -> None:
    print(f"{w['user']} (uid {w['uid']}), groups: {', '.join(w.get('groups', [])) or 'none'}"
          + (f"; identity provider: {w['idp_login']['sub']} ({w['idp_login']['iss']})"
             if w.get("idp_login") else ""))


def audit_verified(r: dict[str, Any]) -> None:
    print(f"audit: {r.get('message')}" if r.get("ok") else f"audit log BROKEN: {r.get('message')}")
    if not r.get("ok") and r.get("bad_seq") is not None:
        print(f"first bad record: seq {r['bad_seq']} (line {r.get('bad_line')})")
