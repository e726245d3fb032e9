"""Vision: faces (and plates) on camera frames, in a worker process of their own."""

from edge.errors import SetupError


class VisionSetupError(SetupError):
    """Vision cannot start as configured: the face template key is missing or wrong (names the fix)."""
