"""docs/runbook.md: every command it shows parses with the real client, says who runs it,
and the protocol's key steps are there (tests/root/test_runbook.py runs them all)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from collector.cli import commands, parser

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
ACTORS = ("requester", "reviewer", "on-call", "admin")


def runbook_commands(text: str | None = None) -> list[tuple[str, str]]:
    """(actor, command line) for every `periscope` line of every ```sh block, in order."""
    text = RUNBOOK.read_text() if text is None else text
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        actor = None
        for line in block.splitlines():
            m = re.fullmatch(r"# as (?:the |a |an )?(.+)", line.strip())
            if m:
                actor = m.group(1)
            elif line.strip():
                assert line.startswith("periscope "), f"not a periscope command: {line!r}"
                assert actor in ACTORS, f"block without '# as <who>' before {line!r}"
                out.append((actor, line))
    return out


COMMANDS = runbook_commands()


def test_the_runbook_has_commands_and_says_who_runs_them() -> None:
    assert len(COMMANDS) >= 20
    assert {a for a, _ in COMMANDS} == set(ACTORS)


@pytest.mark.parametrize(("actor", "line"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_every_command_parses_with_the_real_client(actor: str, line: str) -> None:
    a = parser.build_parser().parse_args(shlex.split(line)[1:])
    assert a.command in commands.DISPATCH


def test_the_protocol_steps_are_all_there() -> None:
    lines = [c for _, c in COMMANDS]
    for needed in ("periscope request create", "periscope request approve",
                   "periscope request deny", "periscope trace --request REQUEST_ID --wait",
                   "periscope request break-glass",
                   "periscope audit show --since 7d --kind request,grant,break_glass",
                   "periscope audit verify", "periscope grant revoke --all",
                   "periscope login"):
        assert any(c.startswith(needed) for c in lines), needed
    text = RUNBOOK.read_text()
    for heading in ("justified", "Ask for payload", "Review", "shortest time",
                    "What to do with what you saw", "a week of access", "revoke everything"):
        assert heading in text, heading


def test_extraction_refuses_an_unattributed_command() -> None:
    with pytest.raises(AssertionError, match="without '# as <who>'"):
        runbook_commands("```sh\nperiscope status\n```\n")
