"""The TOML rule loader: built-ins compile, bad rules fail loudly and name their id."""

from __future__ import annotations

from pathlib import Path

import pytest

from redact import Redactor, RuleError
from redact.rules import BUILTIN, load_rules


def test_builtin_rules_load() -> None:
    rules = load_rules(BUILTIN)
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    assert {"credit_card", "http_authorization", "redis_auth", "pem_private_key"} <= set(ids)


GOOD = """
[[rule]]
id = "ticket_token"
type = "ticket"
pattern = '''TKT-(?P<v>[0-9]{6})'''
hint = '''TKT-'''
anchor = '''TKT-'''
group = ["v"]
"""


def test_custom_rule_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    r = Redactor.from_file(path)
    assert r.redact(b"see TKT-123456 now") == b"see TKT-[REDACTED:ticket] now"
    assert r.counters()["ticket_token"] == 1


def test_include_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("include_defaults = true\n" + GOOD)
    r = Redactor.from_file(path)
    out = r.redact(b"TKT-123456 card 4111111111111111")
    assert out == b"TKT-[REDACTED:ticket] card [REDACTED:credit_card]"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("id = 'bad_regex'\npattern = '''(unclosed'''", "bad_regex"),
        ("id = 'bad_validator'\npattern = 'x+'\nvalidator = 'nope'", "bad_validator"),
        ("id = 'bad_hint'\npattern = '(?<=a)b'", "bad_hint"),  # lookbehind is not RE2
        ("id = 'bad_anchor'\npattern = 'b'\nanchor = '(?<=a)b'", "bad_anchor"),
        ("id = 'bad_group'\npattern = 'x+'\ngroup = ['v']", "bad_group"),
        ("id = 'bad_proto'\npattern = 'x+'\nprotocols = ['smtp']", "bad_proto"),
        ("id = 'bad_option'\npattern = 'x+'\noption = 'everything'", "bad_option"),
        ("id = 'empty_match'\npattern = 'x*'", "empty_match"),
        ("id = 'bad_key'\npattern = 'x+'\ncolour = 'red'", "bad_key"),
        ("id = 'no_def'\npattern = '<<missing>>'", "no_def"),
        ("id = 'Bad Id'\npattern = 'x+'", "Bad Id"),
    ],
)
def test_bad_rule_names_its_id(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[rule]]\n" + body + "\n")
    with pytest.raises(RuleError) as err:
        Redactor.from_file(path)
    assert needle in str(err.value)


def test_duplicate_id(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD + GOOD)
    with pytest.raises(RuleError, match="ticket_token"):
        Redactor.from_file(path)


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[rule]\nid=")
    with pytest.raises(RuleError):
        Redactor.from_file(path)
