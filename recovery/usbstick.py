"""Writing the Lifeboat ISO to a USB stick, safely; optionally a backup partition after it.

The steps a caller goes through (the CLI's ``write-usb`` and ``scripts/write-usb``)::

    sticks = candidates()                       # removable USB disks, for a person to pick
    plan = plan_stick(iso, device, data="exfat", force=False)   # refusals raise RefusedError
    print("\\n".join(plan.lines()))             # what will be destroyed; the person types the name
    result = write_stick(plan, on_event=sink, override_confirmed=...)

Rules (each refusal is one plain line, a RefusedError):

- a disk that is not on USB or is not removable is refused unless ``force`` is given, and even
  then ``write_stick`` needs ``override_confirmed=True`` (the CLI asks a second typed
  confirmation for it);
- never the disk the running system (or the live medium) lives on, nor the disk holding the
  ISO file, nor a read-only one — no override;
- never a disk with a mounted partition (``unmount_command`` says how; ``unmount`` does it when
  the person agreed);
- never a stick smaller than the image (plus room for a data partition with ``data``).

Writing: the image is copied in 4 MiB blocks with a flush every 64 MiB (so the progress shows
the stick's real speed, not the page cache's), flushed, the device's cache dropped, then the
written region is read back (O_DIRECT when the device allows it) and its BLAKE3 hash compared
with the image's.

The data partition: the ISO is a hybrid image whose GPT (made by xorriso) ends where the image
ends. sfdisk moves the backup GPT to the stick's real end (keeping the MBR boot code, the disk
and partition GUIDs) and appends partition 4 from the next MiB to the end, named LIFEBOAT-DATA.
The filesystem is made through a loop device over that region (so no partition node or udev is
needed), and a repository is initialised in its ``lifeboat/`` folder, where
recovery.discover looks. exFAT labels hold 11 characters: there the label is LIFEBOATDAT; the
GPT partition name is LIFEBOAT-DATA either way.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from recovery.diskio import Disk
from recovery.errors import DiskError, RefusedError, ToolError, UsageError
from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.host import direct, loops, tools
from recovery.host import mounts as host_mounts
from recovery.model.disk import DiskInfo
from recovery.units import human_size

MIB = 1024 * 1024
BLOCK = 4 * MIB                 # bytes per write and per read-back
SYNC_EVERY = 64 * MIB           # flush this often while writing
ALIGN = MIB                     # the data partition starts on a MiB boundary
MIN_DATA = 64 * MIB             # smallest data partition worth making
GPT_TAIL = 128 * 1024           # kept free at the end for the backup GPT
TAIL_WIPE = MIB                 # zeroed at the stick's end: an old backup GPT must not linger

DATA_PARTLABEL = "LIFEBOAT-DATA"
DATA_LABELS = {"ext4": "LIFEBOAT-DATA", "exfat": "LIFEBOATDAT"}   # exFAT labels: 11 characters
DATA_TYPES = {"exfat": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",   # Microsoft basic data
              "ext4": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}    # Linux filesystem data
REPO_FOLDER = "lifeboat"        # recovery.discover.NEW_REPO_FOLDER: found one level down
DEFAULT_ISO = "build/lifeboat.iso"

ISO_MAGIC_AT = 32769            # "CD001" of the ISO 9660 primary volume descriptor


# ----------------------------------------------------------------------------- choosing


def is_usb_stick(disk: DiskInfo) -> bool:
    """A removable disk on the USB bus: what a person means by "a USB stick"."""
    return disk.transport == "usb" and disk.removable and not disk.is_image


def override_reason(disk: DiskInfo) -> str | None:
    """Why this disk is not a plain USB stick (writing then needs --force and a second typed
    confirmation); None for a removable USB disk and for a disk-image file."""
    if disk.is_image:
        return None
    if disk.transport != "usb":
        bus = disk.transport or "an unknown bus"
        return f"{disk.path} is not a USB disk (it is on {bus})"
    if not disk.removable:
        return f"{disk.path} is on USB but does not say it is removable (a USB hard disk or SSD?)"
    return None


def hard_refusal(disk: DiskInfo, image_size: int, data: str | None = None,
                 image_disk: str | None = None) -> str | None:
    """Why writing the image to ``disk`` is refused with no override, or None."""
    if disk.is_system:
        return f"{disk.path} holds the running system (or the medium it started from); it is never written"
    if image_disk and image_disk == disk.path:
        return f"{disk.path} holds the image file being written; copy the image elsewhere first"
    if disk.read_only:
        return f"{disk.path} is read-only (is the stick's write-protect switch on?)"
    need = needed_size(image_size, data)
    if disk.size < need:
        what = f"the image ({human_size(image_size)}) and a data partition of at least {human_size(MIN_DATA)}" \
            if data else f"the image ({human_size(image_size)})"
        return (f"{disk.path} is too small: {human_size(disk.size)}, but {what} "
                f"{'need' if data else 'needs'} {human_size(need)}")
    return None


def mounted_refusal(disk: DiskInfo) -> str | None:
    mounted = mounted_partitions(disk)
    if not mounted:
        return None
    where = ", ".join(f"{dev} on {mp}" for dev, mp in mounted)
    return f"{disk.path} is in use: {where}; unmount it first: {unmount_command(disk)}"


def mounted_partitions(disk: DiskInfo) -> list[tuple[str, str]]:
    out = []
    for p in disk.partitions:
        for mp in p.mountpoints:
            out.append((p.path or f"{disk.path} partition {p.number}", mp))
    return out


def unmount_command(disk: DiskInfo) -> str:
    targets = sorted({mp for _, mp in mounted_partitions(disk)}, key=len, reverse=True)
    return "umount " + " ".join(_quote(t) for t in targets)


def unmount(disk: DiskInfo) -> None:
    """Unmount every mounted partition of ``disk`` (deepest mount point first)."""
    for target in sorted({mp for _, mp in mounted_partitions(disk)}, key=len, reverse=True):
        proc = tools.run(["umount", target], check=False)
        if proc.returncode != 0:
            reason = tools.last_line(proc.stderr)
            raise RefusedError(f"cannot unmount {target}: {reason}; close what uses it and try again")


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)


def needed_size(image_size: int, data: str | None) -> int:
    if not data:
        return image_size
    return data_start(image_size) + MIN_DATA + ALIGN      # + the backup GPT, rounded to a MiB


def data_start(image_size: int) -> int:
    return -(-image_size // ALIGN) * ALIGN


def contents(disk: DiskInfo) -> str:
    """What is on a disk, in a few words: 'empty', or its partitions with filesystems and labels."""
    if not disk.partitions:
        return "no partitions" if disk.table else "empty (no partition table found)"
    return "; ".join(part_words(p) for p in disk.partitions)


def part_words(p) -> str:
    words = [f"#{p.number}", human_size(p.size), p.fs or "unknown contents"]
    if p.label:
        words.append(f'"{p.label}"')
    if p.mountpoints:
        words.append("mounted on " + ",".join(p.mountpoints))
    return " ".join(words)


def describe_line(disk: DiskInfo) -> str:
    """One line for a pick list: path, size, bus, model, serial, what is on it."""
    bits = [disk.path, human_size(disk.size), disk.transport or "?",
            "removable" if disk.removable else "fixed", disk.model or "unknown model"]
    if disk.serial:
        bits.append(f"serial {disk.serial}")
    return "  ".join(bits) + f" — {contents(disk)}"


def candidates(disks: list[DiskInfo] | None = None) -> list[DiskInfo]:
    """Removable USB disks, the only ones offered in a pick list (system disks are left out)."""
    if disks is None:
        from recovery.probe.disks import list_disks
        disks = list_disks()
    return [d for d in disks if is_usb_stick(d) and not d.is_system]


# ----------------------------------------------------------------------------- the image


def default_image() -> str:
    """build/lifeboat.iso under the current folder, else the one in this source tree."""
    here = Path(DEFAULT_ISO)
    if here.exists():
        return str(here)
    tree = Path(__file__).resolve().parents[1] / DEFAULT_ISO
    return str(tree if tree.exists() else here)


def check_image(path: str) -> int:
    """Size of an ISO image file; UsageError/DiskError when it is not one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        hint = " (build it with scripts/build-iso)" if path.endswith(DEFAULT_ISO) else ""
        raise UsageError(f"the image {path} does not exist{hint}") from None
    except OSError as exc:
        raise DiskError(f"cannot look at {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is not an image file")
    try:
        with open(path, "rb") as f:
            magic = os.pread(f.fileno(), 5, ISO_MAGIC_AT)
    except OSError as exc:
        raise DiskError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"CD001":
        raise UsageError(f"{path} is not an ISO image (no ISO 9660 volume in it)")
    if st.st_size % 512:
        raise UsageError(f"{path} is not a whole number of 512-byte sectors; the image is damaged")
    return st.st_size


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class StickPlan:
    image: str
    image_size: int
    target: DiskInfo
    data_fs: str | None = None
    data_offset: int = 0
    data_size: int = 0
    override: str | None = None          # set: not a USB stick; a second confirmation is needed

    @property
    def name(self) -> str:
        """What the person types to confirm."""
        return self.target.name

    @property
    def override_phrase(self) -> str:
        return f"erase {self.target.name}"

    def lines(self) -> list[str]:
        t = self.target
        head = f"Target: {t.path}  {human_size(t.size)}  {t.transport or '?'}  {t.model or 'unknown model'}"
        if t.serial:
            head += f"  serial {t.serial}"
        out = [head]
        if self.override:
            out.append(f"WARNING: {self.override}.")
        if t.partitions:
            out.append("Everything on it will be destroyed:")
            out += [f"  {part_words(p)}" for p in t.partitions]
            for p in t.partitions:
                if p.label in DATA_LABELS.values():
                    out.append(f"WARNING: partition {p.number} ({p.label}) is a Lifeboat data partition: "
                               "the backups on it will be lost. Copy them elsewhere first.")
        else:
            out.append("Everything on it will be destroyed (no partitions were found on it).")
        out.append(f"Write {os.path.basename(self.image)} ({human_size(self.image_size)}), then read it back to check it.")
        if self.data_fs:
            out.append(f"Then add an {self.data_fs} partition {DATA_LABELS[self.data_fs]} of "
                       f"{human_size(self.data_size)} holding an empty Lifeboat repository in {REPO_FOLDER}/.")
        else:
            out.append(f"The rest of the stick ({human_size(max(t.size - self.image_size, 0))}) stays unused.")
        return out

    def to_json(self) -> dict:
        return {"image": self.image, "image_size": self.image_size, "target": self.target.to_json(),
                "data_fs": self.data_fs, "data_offset": self.data_offset, "data_size": self.data_size,
                "override": self.override}


def _describe(device: str) -> DiskInfo:
    from recovery.probe.disks import describe
    return describe(device)


def _disk_of_image(image: str) -> str | None:
    from recovery.probe.mounts import disk_of_path
    return disk_of_path(image)


def plan_stick(image: str, device: str, data: str | None = None, force: bool = False,
               disk: DiskInfo | None = None) -> StickPlan:
    """Check every rule and return what will be done; RefusedError names the first rule broken.

    ``disk`` is the already-probed target (tests and the CLI's pick list pass it); otherwise
    ``device`` is probed.
    """
    if data not in (None, "exfat", "ext4"):
        raise UsageError(f"--data must be exfat or ext4, not {data}")
    size = check_image(image)
    target = disk or _describe(device)
    if target.is_image and os.path.exists(image) and os.path.samefile(target.path, image):
        raise RefusedError(f"{target.path} is the image itself")
    reason = hard_refusal(target, size, data, _disk_of_image(image))
    if reason:
        raise RefusedError(reason)
    override = override_reason(target)
    if override and not force:
        raise RefusedError(f"{override}; only removable USB sticks are written. If you are sure, "
                           "add --force (you will be asked to confirm again)")
    reason = mounted_refusal(target)
    if reason:
        raise RefusedError(reason)
    start = data_start(size) if data else 0
    if data and target.logical_sector != 512:
        raise RefusedError(f"{target.path} has {target.logical_sector}-byte sectors: the ISO's partition table "
                           "is made for 512-byte ones, so no data partition can be added (write it without --data)")
    # The backup GPT (up to 63 sectors for xorriso's 248 entries) stays after the data partition.
    end = (target.size - GPT_TAIL) // ALIGN * ALIGN if data else 0
    return StickPlan(image=os.path.abspath(image), image_size=size, target=target, data_fs=data,
                     data_offset=start, data_size=max(end - start, 0), override=override)


# ----------------------------------------------------------------------------- writing


@dataclass
class StickResult:
    target: str
    image_size: int
    image_hash: str
    readback_hash: str
    write_seconds: float
    verify_seconds: float
    data_partition: str | None = None   # e.g. "partition 4, exfat LIFEBOATDAT, 3.6 GiB"
    repository: str | None = None       # folder inside the data partition
    warnings: list[str] = field(default_factory=list)

    @property
    def write_rate(self) -> float:
        return self.image_size / max(self.write_seconds, 1e-6)

    @property
    def verify_rate(self) -> float:
        return self.image_size / max(self.verify_seconds, 1e-6)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d.update(write_rate=self.write_rate, verify_rate=self.verify_rate, verified=self.image_hash == self.readback_hash)
        return d


def write_stick(plan: StickPlan, on_event: EventSink = ignore, cancel: CancelToken | None = None,
                override_confirmed: bool = False) -> StickResult:
    """Write, flush, read back and compare; then the data partition when the plan asks for one."""
    cancel = cancel or CancelToken()
    if plan.override and not override_confirmed:
        raise RefusedError(f"{plan.override}; writing it needs a second confirmation")
    # Look again just before writing: a stick may have been swapped or mounted meanwhile.
    fresh = plan.target if plan.target.is_image else _describe(plan.target.path)
    if not plan.target.is_image and (fresh.size != plan.target.size or fresh.serial != plan.target.serial):
        raise RefusedError(f"{plan.target.path} changed since it was chosen (another stick?); start again")
    reason = hard_refusal(fresh, plan.image_size, plan.data_fs, _disk_of_image(plan.image)) or mounted_refusal(fresh)
    if reason:
        raise RefusedError(reason)

    image_hash, write_seconds = _write_image(plan, on_event, cancel)
    readback_hash, verify_seconds = _read_back(plan, on_event, cancel)
    if readback_hash != image_hash:
        raise DiskError(f"the stick {plan.target.path} reads back different data than was written: the stick "
                        "may be failing or fake (smaller than it claims); do not use it")
    result = StickResult(plan.target.path, plan.image_size, image_hash, readback_hash, write_seconds, verify_seconds)
    if plan.data_fs:
        cancel.check()
        _add_data_partition(plan, result)
    if not plan.target.is_image:
        # The kernel still knows the old partitions: tell it the new ones (best effort; no udev
        # is needed), then flush once more before saying the stick may be pulled.
        tools.quiet(["partx", "-u", plan.target.path])
        os.sync()
    return result


# A stick that refuses writes before its stated end is failing or fake (smaller than it claims).
STICK_INCOMPLETE = "the stick is incomplete and will not boot; write it again, and if it fails at the same place the stick may be fake (smaller than it claims)"


def _write_image(plan: StickPlan, on_event: EventSink, cancel: CancelToken) -> tuple[str, float]:
    hasher = blake3.blake3()
    meter = Meter("write", plan.image_size, on_event)
    started = time.monotonic()
    buf = bytearray(BLOCK)
    with open(plan.image, "rb", buffering=0) as src, Disk(plan.target.path, writable=True, incomplete=STICK_INCOMPLETE) as dst:
        if dst.size < plan.image_size:
            raise RefusedError(f"{plan.target.path} is too small for the image")
        if dst.size >= plan.image_size + 2 * TAIL_WIPE:
            # An old GPT's backup copy sits at the very end; left there, tools may see a ghost table.
            dst.write(bytes(TAIL_WIPE), dst.size - TAIL_WIPE, "clearing the old backup partition table")
        offset, since_sync = 0, 0
        while offset < plan.image_size:
            cancel.check()
            want = min(BLOCK, plan.image_size - offset)
            view = memoryview(buf)[:want]
            got = src.readinto(view)
            if got != want:
                raise DiskError(f"{plan.image} ended early at byte {offset + (got or 0)}; was it replaced while writing?")
            hasher.update(view)
            dst.write(view, offset, "writing the image")
            offset += want
            since_sync += want
            if since_sync >= SYNC_EVERY:
                dst.sync()
                since_sync = 0
            meter.add(want)
        dst.sync()
        direct.drop_cache(dst.fd, dst.is_block)
    meter.finish()
    return hasher.hexdigest(), time.monotonic() - started


def _read_back(plan: StickPlan, on_event: EventSink, cancel: CancelToken) -> tuple[str, float]:
    path = plan.target.path
    hasher = blake3.blake3()
    meter = Meter("verify", plan.image_size, on_event)
    started = time.monotonic()
    sector = max(plan.target.logical_sector, 512)
    aligned = plan.image_size // sector * sector
    direct_fd = direct.open_direct(path)
    whole = direct.aligned_buffer(BLOCK)
    try:
        plain = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DiskError(f"cannot open {path} to read it back: {exc.strerror}") from exc
    try:
        if direct_fd is None:
            direct.drop_cache(plain, not plan.target.is_image)
        offset = 0
        while offset < plan.image_size:
            cancel.check()
            want = min(BLOCK, plan.image_size - offset)
            use_direct = direct_fd is not None and offset + want <= aligned and want % sector == 0
            fd = direct_fd if use_direct else plain
            if use_direct:
                view = whole[:want]
            else:
                view = memoryview(bytearray(want))
            try:
                _pread_full(fd, view, offset, path)
            except OSError as exc:              # the driver refused direct I/O after all
                if not (use_direct and direct.refused(exc)):
                    raise DiskError(f"cannot read {path} back at byte {offset}: {exc.strerror}; "
                                    "the stick may be failing") from exc
                direct.drop_cache(plain, not plan.target.is_image)
                os.close(direct_fd)
                direct_fd = None
                view.release()
                view = memoryview(bytearray(want))
                try:
                    _pread_full(plain, view, offset, path)
                except OSError as exc2:
                    raise DiskError(f"cannot read {path} back at byte {offset}: {exc2.strerror}; "
                                    "the stick may be failing") from exc2
            hasher.update(view)
            view.release()
            offset += want
            meter.add(want)
    finally:
        os.close(plain)
        if direct_fd is not None:
            os.close(direct_fd)
        whole.release()
    meter.finish()
    return hasher.hexdigest(), time.monotonic() - started


def _pread_full(fd: int, view: memoryview, offset: int, path: str) -> None:
    pos, rest = offset, view
    while rest:
        n = os.preadv(fd, [rest], pos)
        if n == 0:
            raise DiskError(f"{path} ended early at byte {pos} while reading it back")
        rest, pos = rest[n:], pos + n


# ----------------------------------------------------------------------------- data partition


def _add_data_partition(plan: StickPlan, result: StickResult) -> None:
    path, fs = plan.target.path, plan.data_fs
    assert fs is not None
    sector = plan.target.logical_sector or 512
    # The ISO's GPT describes an image-sized disk: move its backup copy to the real end first.
    tools.output(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--relocate", "gpt-bak-std", path],
          "moving the backup partition table to the end of the stick")
    line = (f"start={plan.data_offset // sector}, size={plan.data_size // sector}, "
            f"type={DATA_TYPES[fs]}, name=\"{DATA_PARTLABEL}\"\n")
    tools.output(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--append", path],
          "adding the data partition", stdin=line)
    loop = loops.attach(path, plan.data_offset, plan.data_size)
    try:
        label = DATA_LABELS[fs]
        if fs == "ext4":
            tools.output(["mkfs.ext4", "-q", "-F", "-L", label, "-m", "0", loop], "making the ext4 filesystem")
        else:
            tools.output(["mkfs.exfat", "-L", label, loop], "making the exFAT filesystem")
        try:
            where = host_mounts.temporary(loop, fs, writable=True, prefix="lifeboat-stick-")
        except DiskError as exc:
            hint = " (install exfat-fuse, or use --data ext4)" if fs == "exfat" else ""
            raise ToolError(f"cannot mount the new {fs} data partition: {exc.message}{hint}") from exc
        try:
            from recovery.repo.repository import Repository
            Repository.init(where / REPO_FOLDER)
            (where / "README.txt").write_text(
                "This partition holds Lifeboat backups (the folder lifeboat/).\r\n"
                "Lifeboat finds them when it starts from this stick. Do not edit them by hand.\r\n")
            os.sync()
        finally:
            host_mounts.release(where)
    finally:
        loops.detach(loop)
    result.data_partition = f"partition 4, {fs} {DATA_LABELS[fs]}, {human_size(plan.data_size)}"
    result.repository = REPO_FOLDER


def done_lines(result: StickResult, is_image: bool = False) -> list[str]:
    """What the person reads at the end; the last line says whether the stick may be pulled."""
    lines = [f"wrote {human_size(result.image_size)} in {result.write_seconds:.1f} s "
             f"({human_size(result.write_rate)}/s); read back in {result.verify_seconds:.1f} s "
             f"({human_size(result.verify_rate)}/s): BLAKE3 {result.image_hash[:16]} matches"]
    if result.data_partition:
        lines.append(f"data: {result.data_partition}, with an empty Lifeboat repository in {result.repository}/")
    lines += [f"note: {w}" for w in result.warnings]
    if is_image:
        lines.append(f"The image file {result.target} is complete.")
    else:
        lines.append(f"Done: {result.target} is written, checked and flushed. It is safe to pull the stick out now.")
    return lines
