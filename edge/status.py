"""The running daemon's own view of its parts, for `door-edge diag` and the benchmarks.

A unix socket (mode 0600, in $RUNTIME_DIRECTORY, else the state directory) answers each connection
with one JSON document and closes it: every reconnecting part with its state, attempts and
since-when, the heartbeats the watchdog looks at, the journal's storage. It holds no personal data
and takes no input. A socket that cannot be created (a read-only state directory) is logged and
left out; the daemon runs on without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "status.sock"
_UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin


def socket_path(state_dir: Path) -> Path:
    """Where the daemon with this state directory listens (diag computes the same)."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    path = Path(runtime.split(":")[0]) / SOCKET_NAME if runtime else state_dir / SOCKET_NAME
    if len(str(path)) > _UNIX_PATH_MAX:
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"door-edge-{digest}.sock"
    return path


async def serve(path: Path, snapshot: Callable[[], dict]) -> asyncio.AbstractServer | None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot(), default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    try:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - before the loop serves anyone: nothing to block
        server = await asyncio.start_unix_server(answer, path=str(path))
        os.chmod(path, 0o600)
    except OSError as exc:
        log.warning("status socket %s not available (%s); diag will not see the running parts", path, exc)
        return None
    return server


def read(path: Path, timeout: float = 2.0) -> dict | None:
    """The running daemon's snapshot, or None when no daemon answers there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None
