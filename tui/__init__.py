"""Lifeboat's terminal UI: screens and widgets over the engine's public API (package ``recovery``)."""
