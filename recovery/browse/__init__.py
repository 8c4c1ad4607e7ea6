"""Browsing a saved disk without restoring it: a FUSE view of its partitions, each readable
filesystem mounted read-only beneath it, listings and copying files out."""
