"""Plain data shared by every part of the engine: no I/O here."""
