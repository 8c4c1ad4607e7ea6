"""Where repositories live: one small interface (base.Storage) and its backends."""
