"""Lifeboat's engine: disks, used-block maps, the image repository, backup, restore, verify."""

__version__ = "0.1.0"
