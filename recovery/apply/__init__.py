"""The only code that writes to disks: partition tables, boot areas, partition contents."""
