"""Access decisions (pure policy) and the door control glue."""
