"""Config: embedded defaults, overlays, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import config
from collector.errors import ConfigError


def test_embedded_defaults_load() -> None:
    cfg = config.load(text="")
    assert cfg.capture.max_payload_bytes == 256
    assert cfg.paths.socket == "/run/periscope/periscope.sock"
    assert cfg.paths.audit_log == Path("/var/lib/periscope/audit.log")


def test_overlay_changes_one_key() -> None:
    cfg = config.load(text="[capture]\nmax_payload_bytes = 1024\n")
    assert cfg.capture.max_payload_bytes == 1024
    assert cfg.capture.ringbuf_pages == 1024


@pytest.mark.parametrize(("text", "needle"), [
    ("[capture]\nmax_payload_bytes = 1\n", "capture.max_payload_bytes=1 is outside"),
    ("[capture]\nmax_payload_bytes = 'big'\n", "capture.max_payload_bytes must be int"),
    ("[capture]\nmax_payload_bytes = true\n", "must be int"),
    ("[capture]\nnope = 1\n", "unknown key capture.nope"),
    ("[nope]\n", "unknown section [nope]"),
    ("capture = 3\n", "[capture] must be a table"),
    ("[capture\n", "invalid TOML"),
])
def test_bad_config(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        config.load(text=text)
    assert needle in str(err.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "absent.toml")


def test_file_overlay_and_path_override(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[paths]\nstate_dir = "/srv/ps"\n')
    cfg = config.with_paths(config.load(f), socket="/tmp/x.sock")
    assert cfg.paths.events_db == Path("/srv/ps/events.db")
    assert cfg.paths.socket == "/tmp/x.sock"
    assert cfg.source == str(f)
