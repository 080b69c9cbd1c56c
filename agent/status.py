"""The running agent's health, served on a unix socket that only its user can open.

Protocol: a client connects and reads one JSON document until EOF. No request, no commands:
the socket can tell, never change anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from heatgate.errors import HeatgateError
from heatgate.logs import get_logger

__all__ = ["StatusError", "StatusServer", "query_status"]

log = get_logger("heatgate.status")

Snapshot = Callable[[], Awaitable[dict[str, Any]]]


class StatusError(HeatgateError):
    """The agent could not be asked (not running, no permission, bad answer)."""


class StatusServer:
    def __init__(self, path: Path, snapshot: Snapshot) -> None:
        self.path = path
        self._snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # Create the socket under a restrictive umask so that there is no moment at which
        # others could connect.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            document = await self._snapshot()
            writer.write(json.dumps(document, default=str).encode())
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("status.client_gone", error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def query_status(path: Path, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Ask the agent at ``path`` for its health (blocking; for the CLI)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except FileNotFoundError:
        raise StatusError(f"no agent is running (no socket at {path})") from None
    except PermissionError:
        raise StatusError(f"permission denied on {path}: run as the heatgate user") from None
    except ConnectionRefusedError:
        raise StatusError(f"the agent is not answering at {path} (stale socket?)") from None
    except TimeoutError:
        raise StatusError(f"the agent did not answer within {timeout_s:g} s") from None
    try:
        result = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise StatusError(f"unreadable answer from the agent: {exc}") from None
    if not isinstance(result, dict):
        raise StatusError("unreadable answer from the agent: not an object")
    return result
