"""door-edge: the door gateway daemon (decisions, sync, vision, CLI)."""

__version__ = "0.1.0"
