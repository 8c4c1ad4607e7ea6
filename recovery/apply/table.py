"""Write a Layout back onto a disk exactly: table, identities, boot areas; then show it to the kernel.

Render, log, apply, re-read, wait: the layout becomes an sfdisk script (logged in full so a
failed restore can be replayed by hand), sfdisk writes it, the boot areas go over the top
(never over the table), and for a block device the kernel re-reads the table and we wait for
the partition nodes. A 4Kn GPT in a plain image file is written by recovery.probe.gpt because
sfdisk 2.38 cannot be told a file's sector size.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import time

from recovery.errors import DiskError
from recovery.model.layout import Layout, PartitionEntry
from recovery.probe import blockdev, bootarea, gpt
from recovery.probe.table import read_layout
from recovery.host import tools
from recovery.host.tools import first_line

log = logging.getLogger("recovery.apply.table")

NODE_TIMEOUT = 15.0   # seconds to wait for partition nodes after the kernel re-reads the table


def partition_path(disk: str, number: int) -> str | None:
    """The device node of partition `number` on `disk` (sdb->sdb1, nvme0n1->nvme0n1p1,
    loop3->loop3p1); None for an image file, whose partitions have no nodes."""
    real = os.path.realpath(disk)
    if not real.startswith("/dev/"):
        return None
    if os.path.exists(real) and blockdev.path_kind(real) == "file":
        return None
    return f"{real}{'p' if real[-1].isdigit() else ''}{number}"


def render_script(layout: Layout, target: str) -> str:
    """The sfdisk script for `layout` on `target` (partition numbers carried by the node names)."""
    if layout.table not in ("gpt", "dos"):
        raise DiskError(f"cannot write a partition table of type {layout.table!r}")
    ss = layout.sector_size
    lines = [f"label: {layout.table}"]
    if layout.disk_id:
        lines.append(f"label-id: {layout.disk_id}")
    lines += ["unit: sectors", f"sector-size: {ss}"]
    if layout.table == "gpt":
        entries_sectors = -(-gpt.ENTRY_COUNT * gpt.ENTRY_SIZE // ss)
        disk_sectors = layout.disk_size // ss
        if layout.first_lba and layout.first_lba >= 2 + entries_sectors:
            lines.append(f"first-lba: {layout.first_lba}")
        if layout.last_lba and layout.last_lba <= disk_sectors - 2 - entries_sectors:
            lines.append(f"last-lba: {layout.last_lba}")
    lines.append("")
    # MBR: primaries and the extended container first, then logicals in chain order.
    order = sorted(layout.partitions, key=lambda p: (p.kind == "logical", p.number))
    for part in order:
        lines.append(f"{_node(target, part.number)} : {_fields(part, ss, layout.table)}")
    return "\n".join(lines) + "\n"


def _node(target: str, number: int) -> str:
    return f"{target}{'p' if target[-1].isdigit() else ''}{number}"


def _fields(part: PartitionEntry, ss: int, table: str) -> str:
    if part.start % ss or part.size % ss:
        raise DiskError(f"partition {part.number} is not aligned to {ss}-byte sectors")
    fields = [f"start={part.start // ss}", f"size={part.size // ss}", f"type={part.type}"]
    if table == "gpt":
        if part.uuid:
            fields.append(f"uuid={part.uuid}")
        # sfdisk's script syntax has no escape for '"'; such names are set afterwards.
        if part.name and '"' not in part.name:
            fields.append(f'name="{part.name}"')
        if part.attrs:
            fields.append(f'attrs="{part.attrs}"')
    elif part.bootable:
        fields.append("bootable")
    return ", ".join(fields)


def write_layout(target: str, layout: Layout, boot_areas) -> None:
    """Make `target` (whole-disk block device or image file) carry exactly `layout` and the
    given boot areas [(offset, bytes)], then let the kernel see the new partitions."""
    if not os.path.lexists(target) and not target.startswith("/dev/"):
        _create_image(target)
    kind = blockdev.require_whole_disk(target)
    _check_fits(target, kind, layout)
    if layout.table == "none":
        _wipe_tables(target)
    elif kind == "file" and layout.sector_size != 512:
        if layout.table != "gpt":
            raise DiskError(f"an MBR with {layout.sector_size}-byte sectors cannot be written into the image file "
                            f"{target}; attach it with 'losetup -b {layout.sector_size}' and restore to that device")
        _write_gpt_directly(target, layout)
    else:
        _apply_sfdisk(target, layout)
    if layout.table != "none":
        _check_written(target, layout)
        _write_boot_areas(target, layout, boot_areas or [])
    if kind == "block":
        reread_partitions(target, layout)


def _create_image(target: str) -> None:
    """A new image file as the target: made empty here, grown to the layout's size below."""
    try:
        with open(target, "xb"):
            pass
    except OSError as exc:
        raise DiskError(f"cannot create the image file {target}: {exc.strerror}") from exc


def _check_fits(target: str, kind: str, layout: Layout) -> None:
    if kind == "file":
        if os.stat(target).st_size < layout.disk_size:
            os.truncate(target, layout.disk_size)   # an image grows sparsely to the planned size
        return
    size = blockdev.size_of(target)
    if size < layout.disk_size:
        raise DiskError(f"{target} holds {size} bytes, the layout needs {layout.disk_size}")
    sector = blockdev.logical_sector_size(target)
    if sector != layout.sector_size:
        raise DiskError(f"{target} has {sector}-byte sectors but the layout uses {layout.sector_size}-byte sectors")


def _apply_sfdisk(target: str, layout: Layout) -> None:
    script = render_script(layout, target)
    log.info("writing partition table to %s with sfdisk:\n%s", target, script)
    args = ["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "never",
            "--no-reread", "--no-tell-kernel", target]
    _run_sfdisk(args, target, script)
    for part in layout.partitions:
        if part.name and '"' in part.name:
            _run_sfdisk(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
                         "--part-label", target, str(part.number), part.name], target)


def _run_sfdisk(args: list[str], target: str, stdin: str | None = None) -> None:
    try:
        tools.run(args, stdin=stdin, dies_with_us=True)
    except tools.Failed as exc:
        raise DiskError(f"sfdisk could not write the partition table of {target}: {first_line(exc.stderr)}") from exc


def _write_gpt_directly(target: str, layout: Layout) -> None:
    # the backup header belongs at the end of the file, which may be larger than planned
    size = os.stat(target).st_size
    regions = gpt.build_gpt(dataclasses.replace(layout, disk_size=size - size % layout.sector_size))
    log.info("writing %d-byte-sector GPT to image %s directly: %s", layout.sector_size, target,
             [(p.number, p.start, p.size, p.type, p.uuid, p.name, p.attrs) for p in layout.partitions])
    _pwrite_all(target, regions)


def _wipe_tables(target: str) -> None:
    """No table wanted: remove any GPT (both headers), protective MBR or MBR already there."""
    log.info("removing partition-table signatures from %s", target)
    try:
        # --force: wipefs otherwise leaves tables in image files alone ("non-whole disk device").
        tools.run(["wipefs", "--all", "--force", "--types", "gpt,PMBR,dos", target])
    except tools.Failed as exc:
        raise DiskError(f"cannot remove the old partition table of {target}: {first_line(exc.stderr)}") from exc


def _check_written(target: str, layout: Layout) -> None:
    """Read the table back from the disk and insist every identity landed as asked."""
    got = read_layout(target)
    want_parts = {p.number: p for p in layout.partitions}
    got_parts = {p.number: p for p in got.partitions}
    problems = []
    if got.table != layout.table or (layout.disk_id and got.disk_id != layout.disk_id):
        problems.append(f"table {got.table} {got.disk_id}")
    if set(want_parts) != set(got_parts):
        problems.append(f"partitions {sorted(got_parts)} instead of {sorted(want_parts)}")
    for number, want in want_parts.items():
        have = got_parts.get(number)
        if have is None:
            continue
        same = (have.start, have.size, have.type.lower(), have.name, have.attrs, have.bootable, have.kind) == \
               (want.start, want.size, want.type.lower(), want.name, want.attrs, want.bootable, want.kind)
        if not same or (want.uuid and have.uuid != want.uuid.upper()):
            problems.append(f"partition {number} came out as {have}")
    if problems:
        raise DiskError(f"the partition table written to {target} differs from the plan: {problems[0]}")


def _write_boot_areas(target: str, layout: Layout, boot_areas) -> None:
    """Clear the post-table gap, then put the saved boot code and gap bytes back; the MBR
    disk signature and partition entries (440..512) and the GPT structures stay as written."""
    with open(target, "rb") as f:
        header = gpt.primary_header(lambda off, n: os.pread(f.fileno(), n, off), layout.sector_size) \
            if layout.table == "gpt" else None
    span = bootarea.gap_range(layout, header.entries_end(layout.sector_size) if header else None)
    regions: list[tuple[int, bytes]] = []
    if span:
        regions.append((span[0], bytes(span[1] - span[0])))
    for offset, data in boot_areas:
        clipped = _clip_to_boot_space(offset, bytes(data), span)
        if clipped is None:
            log.warning("skipping boot area at byte %d (%d bytes): it would overlap the table or a partition",
                        offset, len(data))
            continue
        if len(clipped[1]) < len(data):
            log.warning("boot area at byte %d cut from %d to %d bytes to fit the gap",
                        offset, len(data), len(clipped[1]))
        regions.append(clipped)
    _pwrite_all(target, regions)


def _clip_to_boot_space(offset: int, data: bytes, span) -> tuple[int, bytes] | None:
    if offset < bootarea.MBR_CODE_SIZE:
        return offset, data[: bootarea.MBR_CODE_SIZE - offset]
    if span and span[0] <= offset < span[1]:
        return offset, data[: span[1] - offset]
    return None


def _pwrite_all(target: str, regions) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DiskError(f"cannot open {target} for writing: {exc.strerror}") from exc
    try:
        for offset, data in regions:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        os.fsync(fd)
    except OSError as exc:
        raise DiskError(f"cannot write to {target}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def reread_partitions(disk: str, layout: Layout, timeout: float = NODE_TIMEOUT) -> None:
    """Make the kernel see `disk`'s new table and wait until every partition node exists."""
    try:
        fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, blockdev.BLKRRPART)
        finally:
            os.close(fd)
    except OSError as exc:
        # A loop device attached without partition scanning refuses BLKRRPART; partx
        # tells the kernel about each partition instead.
        log.info("BLKRRPART on %s failed (%s); using partx", disk, exc.strerror)
        _partx_refresh(disk, add=bool(layout.partitions))
    _settle_udev(timeout)
    wanted = [partition_path(disk, p.number) for p in layout.partitions]
    deadline = time.monotonic() + timeout
    while True:
        missing = [node for node in wanted if node and not os.path.exists(node)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise DiskError(f"the kernel did not show the new partition {missing[0]} within {timeout:.0f} s")
        time.sleep(0.05)


def _partx_refresh(disk: str, add: bool) -> None:
    # A running udev daemon probes the partitions it was just told about and briefly keeps
    # them open, so the kernel may refuse to drop or add them: settle and try again.
    last = None
    for _ in range(4):
        _settle_udev(NODE_TIMEOUT)
        tools.quiet(["partx", "--delete", disk])  # fails harmlessly when none exist
        if not add:
            return
        _settle_udev(NODE_TIMEOUT)
        try:
            tools.run(["partx", "--add", disk])
            return
        except tools.Failed as exc:
            last = exc
            if not os.path.exists("/run/udev/control"):
                break    # nobody else holds the nodes: trying again would not change anything
    raise DiskError(f"the kernel could not re-read the partitions of {disk}: {first_line(last.stderr)}") from last


def _settle_udev(timeout: float) -> None:
    """With a udev daemon running, wait for it to finish making nodes and links."""
    if os.path.exists("/run/udev/control"):
        tools.quiet(["udevadm", "settle", f"--timeout={int(timeout)}"])
