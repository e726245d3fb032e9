"""Vision: faces (and plates) on camera frames, in a worker process of their own."""


class FaceSetupError(Exception):
    """Faces cannot start: a camera that cannot be opened, the template key, or the model files (names the fix)."""
