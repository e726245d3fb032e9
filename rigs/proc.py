"""Stopping the real services the rigs start (pcscd, mosquitto): by PID, politely, then firmly."""

from __future__ import annotations

import subprocess


def terminate(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; a process already gone is fine."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
