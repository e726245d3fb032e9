"""The model files, shipped as package data `edge.models` (see manifest.toml for how each was made)."""
