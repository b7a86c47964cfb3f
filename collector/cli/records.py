"""Human output of the connection and L7 queries (conns, http, sql, redis, dns): one table
each, and the note that says a page is not everything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from collector.cli.render import Col, fmt_bytes, fmt_time, json_lines, table


def _ms(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else ""


def _errors(errs: Any) -> str:
    return ",".join(f"{k}" + (f"x{n}" if n > 1 else "") for k, n in errs.items()) \
        if isinstance(errs, dict) else ""


def _flags(r: dict[str, Any]) -> str:
    return " ".join(f for f, on in (("partial", r.get("partial")), ("tls", r.get("tls")))
                    if on)


def _time_col(rows: list[dict[str, Any]]) -> Col:
    import time
    today = time.localtime()[:3]
    dated = any(time.localtime(r["ts"])[:3] != today for r in rows)
    return Col("ts", "TIME", lambda ts: fmt_time(ts, dated))


def _conn_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        r = dict(r)
        r["where"] = "pre-existing" if r.get("preexisting") else ""
        if r.get("tcp_state"):
            r["where"] = f"{r['where']} {r['tcp_state']}".strip()
        out.append(r)
    return out


def conns(rows: list[dict[str, Any]]) -> None:
    table(_conn_rows(rows), [
        _time_col(rows), Col("pid", "PID", right=True), Col("comm", "COMM", width=15),
        Col("fd", "FD", right=True), Col("role", "ROLE"), Col("local", "LOCAL"),
        Col("peer", "PEER"), Col("proto", "PROTO"), Col("state", "STATE"),
        Col("duration_ms", "DUR(ms)", _ms, True), Col("bytes_in", "IN", fmt_bytes, True),
        Col("bytes_out", "OUT", fmt_bytes, True), Col("errors", "ERRORS", _errors),
        Col("where", "NOTE")], empty="(no stored connections match)")


def http(rows: list[dict[str, Any]]) -> None:
    table([{**r, "flags": _flags(r)} for r in rows], [
        _time_col(rows), Col("pid", "PID", right=True), Col("comm", "COMM", width=15),
        Col("method", "METHOD"), Col("path", "PATH", width=50),
        Col("status", "STATUS", right=True), Col("latency_ms", "LAT(ms)", _ms, True),
        Col("req_bytes", "REQ", fmt_bytes, True), Col("resp_bytes", "RESP", fmt_bytes, True),
        Col("peer", "PEER"), Col("flags", "")], empty="(no stored HTTP requests match)")


def sql(rows: list[dict[str, Any]]) -> None:
    table([{**r, "flags": _flags(r)} for r in rows], [
        _time_col(rows), Col("pid", "PID", right=True), Col("comm", "COMM", width=15),
        Col("proto", "DB"), Col("status", "STATUS"), Col("latency_ms", "LAT(ms)", _ms, True),
        Col("query", "QUERY", width=70), Col("peer", "PEER"), Col("flags", "")],
        empty="(no stored SQL queries match)")


def redis(rows: list[dict[str, Any]]) -> None:
    table([{**r, "flags": _flags(r)} for r in rows], [
        _time_col(rows), Col("pid", "PID", right=True), Col("comm", "COMM", width=15),
        Col("status", "STATUS"), Col("latency_ms", "LAT(ms)", _ms, True),
        Col("command", "COMMAND", width=70), Col("peer", "PEER"), Col("flags", "")],
        empty="(no stored Redis commands match)")


def dns(rows: list[dict[str, Any]]) -> None:
    table([{**r, "flags": _flags(r), "answer": ", ".join(r.get("answers") or [])}
           for r in rows], [
        _time_col(rows), Col("pid", "PID", right=True), Col("comm", "COMM", width=15),
        Col("qtype", "TYPE"), Col("qname", "NAME", width=50), Col("rcode", "RCODE"),
        Col("latency_ms", "LAT(ms)", _ms, True), Col("answer", "ANSWERS", width=60),
        Col("peer", "PEER"), Col("flags", "")], empty="(no stored DNS queries match)")


TABLES: dict[str, Callable[[list[dict[str, Any]]], None]] = {
    "conns": conns, "http": http, "sql": sql, "redis": redis, "dns": dns}


def page_note(command: str, result: dict[str, Any]) -> str | None:
    """What to type for the next page, when older rows match too."""
    if not result.get("more"):
        return None
    return (f"{len(result.get('rows', []))} newest rows shown; older ones match too: add "
            f"--before {result.get('before')} for the next page, or narrow with --since/--until")


def show(command: str, result: dict[str, Any], as_json: bool) -> None:
    """A page as a table (or JSON lines), then the paging note on stderr."""
    rows = result.get("rows", [])
    if as_json:
        json_lines(rows, sys.stdout)
    else:
        TABLES[command](rows)
    note = page_note(command, result)
    if note:
        print(f"periscope: {note}", file=sys.stderr)
