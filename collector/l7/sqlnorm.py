"""SQL normalization: literals out (strings, numbers, dollar quotes) so a query is a shape.

Like Pixie's normalize_pgsql, but one regex pass: string and numeric literals become `?`,
parameters ($1, ?, :name) and identifiers stay, comments are kept (redaction still sees
them), runs of whitespace collapse to one space. PostgreSQL keeps "quoted identifiers"
and treats \\ as an escape only in E'...'; MySQL treats "..." as a string and \\ as an
escape. An unterminated literal (a query cut by a gap) is masked to the end.
"""

from __future__ import annotations

import re

_COMMON = r"""
|(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$(?:.*?\$(?P=tag)?\$|.*\Z))
|(?P<param>\$\d+|:[A-Za-z_]\w*|\?)
|(?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
|(?P<num>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
|(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
|(?P<space>\s+)
"""
_PG = re.compile(
    r"""(?P<str>[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)|(?:[XxBbNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z))"""
    r"""|(?P<dq>"(?:[^"]|"")*(?:"|\Z))""" + _COMMON, re.S | re.X)
_MY = re.compile(
    r"""(?P<str>(?:[XxBbNn]|_[a-z0-9]+)?'(?:[^'\\]|''|\\.)*(?:'|\Z)|"(?:[^"\\]|""|\\.)*(?:"|\Z))"""
    r"""|(?P<dq>`(?:[^`]|``)*(?:`|\Z))""" + _COMMON, re.S | re.X)
_DIALECTS = {"pgsql": _PG, "mysql": _MY}


def _sub(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "str" or kind == "num" or kind == "tag" or kind == "dollar":
        return "?"
    if kind == "space":
        return " "
    return m[0]


def normalize(sql: str, dialect: str = "pgsql") -> str:
    """`SELECT * FROM t WHERE a = 'x' AND b > 10` -> `SELECT * FROM t WHERE a = ? AND b > ?`."""
    return _DIALECTS[dialect].sub(_sub, sql).strip()
