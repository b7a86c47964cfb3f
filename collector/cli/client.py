"""The client's side of the socket: connect with clear errors, send requests, read replies."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import orjson

from collector import protocol
from collector.errors import PeriscopeError


class ClientError(PeriscopeError):
    """Anything the user must be told in one line: no daemon, denied, bad reply."""


class Connection:
    def __init__(self, path: str, timeout: float | None = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise ClientError(f"no daemon socket at {path}: is periscoped running?") from None
        except PermissionError:
            raise ClientError(f"permission denied on {path}: you need to be in the "
                              "'periscope' group (or root)") from None
        except OSError as err:
            raise ClientError(f"cannot connect to {path}: {err.strerror}") from None
        self.file = self.sock.makefile("rb")

    def send(self, op: str, args: dict[str, Any]) -> None:
        self.sock.sendall(protocol.request(op, args))

    def lines(self) -> Iterator[dict[str, Any]]:
        for line in self.file:
            yield orjson.loads(line)

    def call(self, op: str, args: dict[str, Any]) -> Any:
        self.send(op, args)
        for msg in self.lines():
            return check_reply(msg)
        raise ClientError("daemon closed the connection without a reply")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def check_reply(msg: dict[str, Any]) -> Any:
    if msg.get("ok"):
        return msg.get("result")
    err = msg.get("error") or {}
    raise ClientError(f"{err.get('name', 'ERROR')}: {err.get('message', 'unknown error')}")
