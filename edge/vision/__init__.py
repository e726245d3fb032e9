"""Vision: faces (and plates) on camera frames, in a worker process of their own."""


class VisionSetupError(Exception):
    """Cameras cannot start: a camera that cannot be opened, the face template key, or a model file (names the fix)."""
