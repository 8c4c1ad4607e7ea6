"""Sources of saved disks: Lifeboat snapshots and images other tools made (see base.py)."""
