"""Local state in SQLite: whitelist and the durable event journal."""
