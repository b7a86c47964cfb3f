"""`periscope login` (the OAuth device flow against a local fake provider) and where the client
takes its ID token from."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from collector.cli import login
from collector.cli.client import ClientError
from tests.unit.access.fakeidp import AUDIENCE, FakeIdp, device_flow_server


def test_device_flow_polls_until_approved_then_saves_0600(tmp_path: Path) -> None:
    idp = FakeIdp()
    out = io.StringIO()
    slept: list[float] = []
    with device_flow_server(idp, "alice", pending=2) as (issuer, calls):
        token = login.device_flow(issuer, AUDIENCE, out=out, sleep=slept.append)
    assert calls == {"device": 1, "token": 3} and slept == [1.0, 1.0, 1.0]
    assert "enter the code WDJB-MJHT" in out.getvalue() and token not in out.getvalue()
    assert login.claims(token)["preferred_username"] == "alice"
    path = login.save(token, tmp_path / "c" / "id-token")
    assert path.read_text().strip() == token and (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_device_flow_errors_are_one_line(tmp_path: Path) -> None:
    idp = FakeIdp()
    with device_flow_server(idp, "alice") as (issuer, _calls), \
            pytest.raises(ClientError, match="device authorization failed: invalid_request"):
        login.device_flow(issuer, "wrong-client", out=io.StringIO(), sleep=lambda s: None)
    with pytest.raises(ClientError, match="cannot read the identity provider's configuration"):
        login.device_flow("http://127.0.0.1:9", AUDIENCE, out=io.StringIO())


def test_token_sources_in_order(tmp_path: Path) -> None:
    idp = FakeIdp()
    fresh, stale = idp.token("alice"), idp.token("alice", exp=int(time.time()) - 10)
    f = tmp_path / "tok"
    f.write_text(stale + "\n")
    cache = tmp_path / "cache"
    cache.write_text(fresh)
    assert login.token_from(str(f), {}, cache) == stale  # explicit: always sent
    assert login.token_from(None, {login.TOKEN_ENV: fresh}, cache) == fresh
    assert login.token_from(None, {}, cache) == fresh
    cache.write_text(stale)
    assert login.token_from(None, {}, cache) is None  # an expired cached login is not sent
    assert login.token_from(None, {}, tmp_path / "none") is None
    with pytest.raises(ClientError, match="cannot read the ID token file"):
        login.token_from(str(tmp_path / "missing"), {}, cache)
