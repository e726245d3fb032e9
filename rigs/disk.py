"""A state directory that fills up: a small tmpfs (a real file system with a real ENOSPC)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mount_tmpfs(path: Path, size: str = "4m") -> str | None:
    """Mount a tmpfs of `size` at `path`; None when it worked, else why not (it needs CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True, check=False)
    return None if res.returncode == 0 else res.stderr.strip() or f"mount exited {res.returncode}"


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write until the file system has not one byte left; the file to delete when space is to return."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                continue
    return filler
