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


def test_export_defaults_are_off() -> None:
    cfg = config.load(text="")
    assert cfg.export.otlp.enabled is False
    assert cfg.export.otlp.protocol == "http/protobuf"
    assert cfg.export.otlp.url("traces") == "http://127.0.0.1:4318/v1/traces"
    assert cfg.export.otlp.headers == {}
    assert cfg.export.jsonlog.path == ""


def test_export_overlay_nested_tables() -> None:
    cfg = config.load(text='[export.otlp]\nenabled = true\nendpoint = "https://otel:4318/base/"\n'
                           'batch_size = 100\n[export.otlp.headers]\nauthorization = "Bearer t"\n'
                           '[export.jsonlog]\npath = "journald"\n')
    o = cfg.export.otlp
    assert o.enabled is True and o.batch_size == 100 and o.queue_size == 8192
    assert o.url("logs") == "https://otel:4318/base/v1/logs"
    assert o.headers == {"authorization": "Bearer t"}
    assert cfg.export.jsonlog.path == "journald" and cfg.export.jsonlog.keep == 5
    # [export] written as one table of tables works the same
    same = config.load(text='[export]\notlp = { enabled = true }\n')
    assert same.export.otlp.enabled is True


@pytest.mark.parametrize(("text", "needle"), [
    ("[export.otlp]\nenabled = 1\n", "export.otlp.enabled must be bool, got int"),
    ("[export.otlp]\nqueue_size = true\n", "export.otlp.queue_size must be int"),
    ("[export.otlp]\nprotocol = 'grpc'\n",
     "export.otlp.protocol='grpc' is not one of: http/protobuf"),
    ("[export.otlp]\ncompression = 'zstd'\n", "export.otlp.compression='zstd' is not one of"),
    ("[export.otlp]\nendpoint = 'localhost:4318'\n", "export.otlp.endpoint='localhost:4318' "
     "must be an http:// or https:// URL"),
    ("[export.otlp]\nendpoint = 'http://h:4318/?a=1'\n", "must not have a query"),
    ("[export.otlp]\nendpoint = 'http://h:99999'\n", "is not a URL"),
    ("[export.otlp]\nheaders = 'x'\n", "export.otlp.headers must be a table of strings"),
    ("[export.otlp.headers]\n'bad name' = 'x'\n", "invalid header name 'bad name'"),
    ("[export.otlp.headers]\nx-token = 3\n", "header 'x-token' must be a string"),
    ("[export.otlp]\nbatch_size = 9000\nqueue_size = 1000\n",
     "export.otlp.batch_size=9000 must not exceed export.otlp.queue_size=1000"),
    ("[export.otlp]\ntimeout_s = 0\n", "export.otlp.timeout_s=0 is outside"),
    ("[export.otlp]\nnope = 1\n", "unknown key export.otlp.nope"),
    ("[export.kafka]\n", "unknown section [export.kafka]"),
    ("export = 1\n", "[export] must be a table"),
    ("[export]\notlp = 1\n", "[export.otlp] must be a table"),
    ("[export.jsonlog]\npath = 'relative.jsonl'\n",
     'must be "" (off), "journald" or an absolute file path'),
    ("[export.jsonlog]\nkeep = -1\n", "export.jsonlog.keep=-1 is outside"),
])
def test_bad_export_config(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(text=text)
    assert needle in str(err.value)


def test_header_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as err:
        config.load(text='[export.otlp.headers]\nauthorization = "Bearer s3cret\\n"\n')
    assert "s3cret" not in str(err.value)
    assert "export.otlp.headers" in str(err.value)
