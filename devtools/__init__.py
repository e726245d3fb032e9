"""Bench and demo: development tools that drive the real daemon against the rigs.

They run from the source tree only (`make dev` puts it on the venv's path); a gateway install has
neither them nor `rigs/`. `door-edge bench` and `door-edge demo` find them by module name.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"
