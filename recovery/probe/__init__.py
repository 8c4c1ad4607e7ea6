"""Read-only observation of disks: partition tables, boot areas, mounts, the machine's disks.

Nothing in this package writes to a disk; `recovery.apply` is the only writer.
"""
