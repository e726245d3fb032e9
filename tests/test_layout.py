"""The layout holds: the bottom layer imports nothing from the top, and the runtime nothing of the bench.

The import graph is read from the source (every `import` and `from ... import`, at any depth, also
inside functions), so a lazy import cannot hide a dependency. A card-only daemon is then run for
real and its memory map read: no numpy, no OpenCV.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rigs.rig import wait_until
from tests.conftest import REPO

from .test_daemon import RESIDENT_ID, journal, swipe

RUNTIME = ("edge", "drivers", "protocol", "central")
BENCH = ("rigs", "devtools", "training", "tests")


def imports(package: str) -> dict[str, set[str]]:
    """Each file of `package` -> the full dotted names of the modules it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(REPO))] = names
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f} imports {name}" for f, names in imports(package).items() for name in sorted(names)
            if name.split(".")[0] in forbidden]


def test_drivers_import_nothing_from_edge_or_the_bench():
    assert offenders("drivers", ("edge", "central", *BENCH)) == []


@pytest.mark.parametrize("package", RUNTIME)
def test_the_runtime_imports_no_rig_devtool_or_training(package):
    assert offenders(package, BENCH) == []


def test_the_wire_protocol_stands_alone():
    """Both halves speak it; it must not pull in either one's internals."""
    assert offenders("protocol", ("edge", "central", "drivers", *BENCH)) == []


def test_the_import_graph_reader_sees_lazy_imports(tmp_path, monkeypatch):
    """The check above would pass vacuously if the reader missed imports inside functions."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n    from rigs.vcard import VirtualCard\n    import devtools.bench\n")
    monkeypatch.setattr("tests.test_layout.REPO", tmp_path)
    assert offenders("pkg", BENCH) == ["pkg/m.py imports devtools.bench", "pkg/m.py imports rigs.vcard"]


def test_a_card_only_daemon_loads_neither_numpy_nor_opencv(rig, daemon_factory):
    d = daemon_factory()
    card = swipe(RESIDENT_ID)
    wait_until(lambda: any(r[3] == "granted" for r in journal(rig)), 15, "a grant in the journal")
    card.remove()
    assert d.proc is not None
    maps = Path(f"/proc/{d.proc.pid}/maps").read_text()
    loaded = {Path(line.split()[-1]).name for line in maps.splitlines() if line.split()[-1].startswith("/")}
    assert not [n for n in loaded if n.startswith(("_multiarray_umath", "cv2", "libopencv", "onnxruntime", "libdlib"))], loaded
    assert listening_ports(d.proc.pid) == []  # the status socket is a unix socket in the state directory
    assert d.stop() == 0


def listening_ports(pid: int) -> list[str]:
    """TCP ports in LISTEN and bound UDP ports that belong to `pid`, from /proc."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            state, inode = cols[3], cols[9]
            if inode in inodes and (state == "0A" or table.startswith("udp")):
                found.append(f"{table} {cols[1]}")
    return found


def test_the_gateway_install_brings_no_virtual_device():
    """`make install` is what a gateway gets: pcscd and pyscard's build needs, nothing that listens
    for virtual cards (vpcd listens on TCP 35963 on every interface) or fakes the parts."""
    apt = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith(("RUNTIME_APT :=", "DEV_APT :=")):
            name, _, pkgs = line.partition(":=")
            apt[name.strip()] = set(pkgs.split())
    assert {"pcscd", "libpcsclite-dev", "swig", "gcc", "python3-dev", "python3-venv"} <= apt["RUNTIME_APT"]
    assert not apt["RUNTIME_APT"] & {"vsmartcard-vpcd", "socat", "mosquitto", "pcsc-tools"}
    assert {"vsmartcard-vpcd", "socat", "mosquitto"} <= apt["DEV_APT"]
