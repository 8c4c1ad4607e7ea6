"""Golden PC disk images, built at test time from Debian packages and cached.

Each bootable image holds a Debian kernel and a busybox initramfs on an ext4 root. Its /init
mounts the root read-only by filesystem UUID, fingerprints every file on it and prints::

    GOLDEN-PC ok root=<sha256> size=<bytes from statfs> dev=<block device>

then powers the machine off. ``root`` is the sha256 of the ``sha256sum`` lines of every
regular file under the root (``find . -xdev -type f | sort``), so any lost or changed byte
changes it; ``Golden.fingerprint`` is the same value computed on the host while building.

Builders (each returns a ``Golden``; images live under ``<cache>/golden`` and must be treated
as read-only: boot them with ``Disk(..., snapshot=True)``):

- ``bios_pc()``: MBR, GRUB i386-pc boot.img + core.img in the post-MBR gap, ext4 root, swap
  in a logical partition.
- ``uefi_pc()``: GPT, FAT32 ESP with GRUB EFI at \\EFI\\BOOT\\BOOTX64.EFI, ext4 root, swap,
  a small trailing ext4 partition after them.
- ``windows_pc()``: GPT shaped like Windows: ESP, MSR, NTFS "C:" with files, NTFS recovery
  partition with ``RequiredPartition GUID:63``. It does not boot.

``kernel()`` and ``initramfs()`` are the shared pieces (the kernel is also the QEMU KVM probe).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.vm.qemu import cache_dir

BUILD_VERSION = 5
MIB = 1024 * 1024
MARKER = r"GOLDEN-PC ok root=(?P<root>[0-9a-f]{64}) size=(?P<size>\d+) dev=(?P<dev>\S+)\n"

# Storage drivers for every bus tests/vm/qemu.py offers, plus ext4 and its checksum.
INITRD_MODULES = [
    "crc32c_generic", "crc32c-intel", "virtio_pci", "virtio_blk", "nvme", "ahci", "ata_piix",
    "sd_mod", "xhci_pci", "ehci_pci", "usb_storage", "uas", "ext4",
]


@dataclass
class Golden:
    name: str
    path: Path
    firmware: str                    # "bios", "uefi" or "none"
    fingerprint: str | None = None   # expected root= of the marker
    root_uuid: str | None = None
    root_part: int | None = None
    root_fs_size: int | None = None  # statfs size the original prints
    files: dict = field(default_factory=dict)     # {"3": {"rel/path": sha256}} for NTFS shapes
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Golden":
        d = dict(d)
        d["path"] = Path(d["path"])
        return cls(**d)


# ----------------------------------------------------------------------------- helpers


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run([str(c) for c in cmd], **kw)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {exc.stderr or exc.stdout}") from exc


@contextmanager
def _locked(name: str):
    path = cache_dir() / f".{name}.lock"
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def copy_into(src: Path, image: Path, offset: int) -> None:
    """Copy a filesystem image into a disk image at offset, skipping zero blocks (sparse)."""
    zero = bytes(MIB)
    with open(src, "rb") as fi, open(image, "r+b") as fo:
        pos = 0
        while True:
            block = fi.read(MIB)
            if not block:
                break
            if block != zero[: len(block)]:
                os.pwrite(fo.fileno(), block, offset + pos)
            pos += len(block)


@contextmanager
def mounted(device: str, where: Path, read_only: bool = False):
    """`device` mounted at `where` (made when missing) for the `with` block."""
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", *(["-o", "ro"] if read_only else []), device, str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def tree_fingerprint(root: Path) -> str:
    """What /init computes: sha256 of `sha256sum` lines of every file, sorted by ./path."""
    paths = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            if full.is_file() and not full.is_symlink():
                paths.append("./" + str(full.relative_to(root)))
    lines = []
    for rel in sorted(paths, key=lambda p: p.encode()):
        digest = hashlib.sha256((root / rel[2:]).read_bytes()).hexdigest()
        lines.append(f"{digest}  {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _write_data_files(root: Path, seed: int, count: int = 60, big: int = 6 * MIB) -> None:
    """A deterministic file set: small text files in a few folders and one larger random file."""
    rng = random.Random(seed)
    for i in range(count):
        folder = root / "golden" / f"dir{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(10, 40000)
        (folder / f"file{i:03d}.bin").write_bytes(rng.randbytes(size))
    (root / "golden" / "big.bin").write_bytes(rng.randbytes(big))


def _sfdisk(image: Path, script: str) -> None:
    _run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", image, input=script)


def _sfdisk_json(image: Path) -> dict:
    return json.loads(_run("sfdisk", "--json", image).stdout)["partitiontable"]


def table_identity(image) -> dict:
    """The identities a restore must keep, read with sfdisk: label, disk id, and per partition
    type, GUID, name and attributes (not places or sizes, which a restore may change)."""
    t = _sfdisk_json(Path(image))
    keys = ("type", "uuid", "name", "attrs", "bootable")
    return {"label": t["label"], "id": t["id"], "sectorsize": t.get("sectorsize", 512),
            "partitions": [{k: p.get(k) for k in keys} for p in t["partitions"]]}


# ----------------------------------------------------------------------------- kernel


@dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: Path
    modules: Path        # .../lib/modules/<release>, with modules.dep


def kernel() -> Kernel:
    """The current Debian linux-image-amd64 kernel, downloaded once into the cache."""
    base = cache_dir() / "kernel"
    base.mkdir(parents=True, exist_ok=True)
    with _locked("kernel"):
        found = sorted(base.glob("vmlinuz-*"))
        tree = base / "x"
        if not found or not (tree / "lib" / "modules").exists():
            with tempfile.TemporaryDirectory(dir=base) as tmp:
                dep = _run("apt-cache", "depends", "linux-image-amd64").stdout
                pkg = next(line.split(":", 1)[1].strip() for line in dep.splitlines()
                           if line.strip().startswith("Depends:") and "linux-image-" in line)
                _run("apt-get", "download", pkg, cwd=tmp)
                deb = next(Path(tmp).glob("*.deb"))
                shutil.rmtree(tree, ignore_errors=True)
                _run("dpkg-deb", "-x", deb, tree)
            vm = next((tree / "boot").glob("vmlinuz-*"))
            shutil.copyfile(vm, base / vm.name)
            found = [base / vm.name]
        vmlinuz = found[-1]
        release = vmlinuz.name[len("vmlinuz-"):]
        modules = tree / "lib" / "modules" / release
        if not (modules / "modules.dep").exists():
            _run("depmod", "-b", tree, release)
        return Kernel(release, vmlinuz, modules)


def _module_order(k: Kernel, wanted: list[str]) -> list[str]:
    """Relative .ko paths of the wanted modules and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (k.modules / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        name = Path(mod).name.removesuffix(".ko").replace("-", "_")
        by_name[name] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for d in deps.get(mod, []):
            visit(d)
        order.append(mod)

    for name in wanted:
        mod = by_name.get(name.replace("-", "_"))
        if mod:
            visit(mod)
    return order


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
fail() { echo "GOLDEN-PC fail $*"; sync; poweroff -f; }
want=$(sed -n 's/.*golden.root=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$want" ] || fail "no golden.root= on the kernel command line"
dev=""
i=0
while [ $i -lt 150 ]; do
  dev=$(findfs UUID=$want 2>/dev/null) && [ -n "$dev" ] && break
  sleep 0.2
  i=$((i+1))
done
[ -n "$dev" ] || fail "no filesystem with UUID $want"
mkdir -p /root
mount -t ext4 -o ro "$dev" /root || fail "cannot mount $dev"
cd /root
fp=$(find . -xdev -type f | grep -v '^./lost+found/' | sort | while read -r f; do sha256sum "$f"; done | sha256sum | cut -d' ' -f1)
set -- $(stat -f -c '%S %b' /root)
size=$(( $1 * $2 ))
cd /
echo "GOLDEN-PC ok root=$fp size=$size dev=${dev#/dev/}"
blkid | sed 's/^/GOLDEN-PC blkid /'
umount /root
sync
poweroff -f
"""


def initramfs() -> Path:
    """A gzip cpio with static busybox, the storage modules and INIT; cached."""
    k = kernel()
    key = hashlib.sha256((INIT + " ".join(INITRD_MODULES) + k.release + str(BUILD_VERSION)).encode()).hexdigest()[:12]
    out = cache_dir() / "golden" / f"initrd-{key}.img"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked("initramfs"), tempfile.TemporaryDirectory() as tmp:
        if out.exists():
            return out
        root = Path(tmp) / "root"
        for d in ("bin", "dev", "proc", "sys", "root", "lib/modules"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
        order = _module_order(k, INITRD_MODULES)
        for mod in order:
            dst = root / "lib" / "modules" / mod
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(k.modules / mod, dst)
        (root / "modules.order").write_text("\n".join(order) + "\n")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        names = _run("find", ".", cwd=root).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=root,
                              input=names.encode(), capture_output=True, check=True).stdout
        tmp_out = out.with_suffix(".tmp")
        tmp_out.write_bytes(gzip.compress(cpio, 6))
        tmp_out.rename(out)
    return out


# ----------------------------------------------------------------------------- root fs


def _root_tree(staging: Path, seed: int, root_uuid: str, fstab: str) -> str:
    k = kernel()
    (staging / "boot").mkdir(parents=True)
    shutil.copyfile(k.vmlinuz, staging / "boot" / "vmlinuz")
    shutil.copyfile(initramfs(), staging / "boot" / "initrd.img")
    (staging / "etc").mkdir()
    (staging / "etc" / "fstab").write_text(fstab)
    (staging / "etc" / "hostname").write_text(f"golden-{seed}\n")
    _write_data_files(staging, seed)
    return tree_fingerprint(staging)


def _mkfs_ext4(path: Path, size: int, uuid: str, label: str, tree: Path | None) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    cmd = ["mkfs.ext4", "-q", "-F", "-U", uuid, "-L", label, "-E", "root_owner=0:0"]
    if tree is not None:
        cmd += ["-d", tree]
    _run(*cmd, path)


def _boot_cfg(root_uuid: str) -> str:
    return (f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"echo GOLDEN-PC grub\n"
            f"linux /boot/vmlinuz console=ttyS0 quiet panic=-1 golden.root={root_uuid}\n"
            f"initrd /boot/initrd.img\n"
            f"boot\n")


def _cached(name: str):
    """Cache lookup: (image path, meta path, the cached Golden or None)."""
    d = cache_dir() / "golden"
    d.mkdir(parents=True, exist_ok=True)
    # any change to this recipe (or a version bump) builds fresh images under a new name
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    img = d / f"{name}-v{BUILD_VERSION}-{recipe}.img"
    meta = img.with_suffix(".json")
    if img.exists() and meta.exists():
        return img, meta, Golden.from_json(json.loads(meta.read_text()))
    return img, meta, None


def _finish(golden: Golden, tmp_img: Path, img: Path, meta: Path) -> Golden:
    golden.path = img
    tmp_img.rename(img)
    meta.write_text(json.dumps(golden.to_json(), indent=1))
    for old in img.parent.glob(f"{golden.name}-v*"):      # images of older recipes
        if old not in (img, meta):
            old.unlink(missing_ok=True)
    return golden


# ----------------------------------------------------------------------------- BIOS PC


def bios_pc() -> Golden:
    """1 GiB MBR disk: GRUB i386-pc (boot.img + core.img in the gap), ext4 root in partition 1,
    an extended partition 2 holding swap as logical partition 5."""
    img, meta, cached = _cached("bios-pc")
    if cached:
        return cached
    with _locked("bios-pc"), tempfile.TemporaryDirectory(dir=img.parent) as tmp:
        img, meta, cached = _cached("bios-pc")
        if cached:
            return cached
        t = Path(tmp)
        disk_size = 1024 * MIB
        root_uuid, swap_uuid = str(uuidlib.uuid4()), str(uuidlib.uuid4())
        staging = t / "root"
        fp = _root_tree(staging, 1, root_uuid, f"UUID={root_uuid} / ext4 defaults 0 1\n"
                                               f"UUID={swap_uuid} none swap sw 0 0\n")
        work = t / "disk.img"
        with open(work, "wb") as f:
            f.truncate(disk_size)
        # root, then an extended partition holding swap as a logical partition (its EBR 1 MiB before)
        _sfdisk(work, "label: dos\nlabel-id: 0x1eb0a7c1\n"
                      "start=2048, size=1835008, type=83, bootable\n"
                      "type=5\n"
                      "size=131072, type=82\n")
        parts = _sfdisk_json(work)["partitions"]
        part = parts[0]
        swap_part = next(p for p in parts if p["node"].endswith("5"))
        swap = t / "swap"
        with open(swap, "wb") as f:
            f.truncate(swap_part["size"] * 512)
        _run("mkswap", "-U", swap_uuid, "-L", "golden-swap", swap)
        copy_into(swap, work, swap_part["start"] * 512)
        swap.unlink()
        rootfs = t / "root.ext4"
        _mkfs_ext4(rootfs, part["size"] * 512, root_uuid, "golden-root", staging)
        copy_into(rootfs, work, part["start"] * 512)
        rootfs.unlink()

        cfg = t / "early.cfg"
        cfg.write_text(_boot_cfg(root_uuid))
        core = t / "core.img"
        _run("grub-mkimage", "-O", "i386-pc", "-o", core, "-c", cfg, "-p", "(hd0,msdos1)/boot/grub",
             "biosdisk", "part_msdos", "ext2", "search", "search_fs_uuid", "linux", "echo")
        core_bytes = core.read_bytes()
        if len(core_bytes) > (2048 - 1) * 512:
            raise RuntimeError("core.img does not fit in the post-MBR gap")
        boot = bytearray(Path("/usr/lib/grub/i386-pc/boot.img").read_bytes())
        # boot.img reads core.img's first sector from LBA 1 (its default kernel_sector); make it
        # trust the BIOS drive number like grub-setup does for hard disks (NOP the check).
        boot[0x66:0x68] = b"\x90\x90"
        with open(work, "r+b") as f:
            f.seek(0)
            f.write(bytes(boot[:440]))
            f.seek(512)
            f.write(core_bytes)
        size = _statfs_size_ext4(work, part["start"] * 512)
        golden = Golden("bios-pc", img, "bios", fp, root_uuid, 1, size,
                        extra={"core_img_bytes": len(core_bytes), "swap_uuid": swap_uuid})
        return _finish(golden, work, img, meta)


def _statfs_size_ext4(image: Path, offset: int) -> int:
    """The size statfs reports for an ext4 at offset: (blocks - overhead) * block size.

    Read from the superblock: s_blocks_count minus s_overhead_clusters when set, else the
    kernel's own computation; we let the guest report it and only record dumpe2fs's view."""
    out = _run("dumpe2fs", "-h", f"{image}?offset={offset}", check=False).stdout
    info = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        info[k.strip()] = v.strip()
    try:
        return int(info["Block count"]) * int(info["Block size"])
    except (KeyError, ValueError):
        return 0


# ----------------------------------------------------------------------------- UEFI PC


def uefi_pc() -> Golden:
    """1 GiB GPT disk: ESP (FAT32, GRUB at the removable path), ext4 root, swap, small trailing ext4."""
    img, meta, cached = _cached("uefi-pc")
    if cached:
        return cached
    with _locked("uefi-pc"), tempfile.TemporaryDirectory(dir=img.parent) as tmp:
        img, meta, cached = _cached("uefi-pc")
        if cached:
            return cached
        t = Path(tmp)
        disk_size = 1024 * MIB
        root_uuid, trail_uuid = str(uuidlib.uuid4()), str(uuidlib.uuid4())
        swap_uuid = str(uuidlib.uuid4())
        esp_id = "7A3C" + "-" + "91E5"
        work = t / "disk.img"
        with open(work, "wb") as f:
            f.truncate(disk_size)
        _sfdisk(work, "label: gpt\n"
                      "start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\n"
                      "size=1703936, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
                      "size=131072, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=swap\n"
                      "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=trailing\n")
        parts = _sfdisk_json(work)["partitions"]
        fstab = (f"UUID={root_uuid} / ext4 defaults 0 1\nUUID={esp_id} /boot/efi vfat umask=0077 0 1\n"
                 f"UUID={swap_uuid} none swap sw 0 0\nUUID={trail_uuid} /srv/trailing ext4 defaults 0 2\n")
        staging = t / "root"
        fp = _root_tree(staging, 2, root_uuid, fstab)

        # ESP
        esp = t / "esp.fat"
        with open(esp, "wb") as f:
            f.truncate(parts[0]["size"] * 512)
        _run("mkfs.vfat", "-F", "32", "-s", "1", "-n", "ESP", "-i", esp_id.replace("-", ""), esp)
        cfg = t / "early.cfg"
        cfg.write_text(_boot_cfg(root_uuid))
        efi = t / "BOOTX64.EFI"
        _run("grub-mkimage", "-O", "x86_64-efi", "-o", efi, "-c", cfg, "-p", "/EFI/BOOT",
             "part_gpt", "part_msdos", "fat", "ext2", "search", "search_fs_uuid", "linux", "echo")
        _run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT")
        _run("mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI")
        copy_into(esp, work, parts[0]["start"] * 512)
        esp.unlink()

        rootfs = t / "root.ext4"
        _mkfs_ext4(rootfs, parts[1]["size"] * 512, root_uuid, "golden-root", staging)
        copy_into(rootfs, work, parts[1]["start"] * 512)
        rootfs.unlink()

        swap = t / "swap"
        with open(swap, "wb") as f:
            f.truncate(parts[2]["size"] * 512)
        _run("mkswap", "-U", swap_uuid, "-L", "golden-swap", swap)
        copy_into(swap, work, parts[2]["start"] * 512)
        swap.unlink()

        trail_tree = t / "trail"
        (trail_tree / "recovery").mkdir(parents=True)
        (trail_tree / "recovery" / "README").write_text("a small partition after the root\n")
        trail = t / "trail.ext4"
        _mkfs_ext4(trail, parts[3]["size"] * 512, trail_uuid, "trailing", trail_tree)
        copy_into(trail, work, parts[3]["start"] * 512)
        trail.unlink()

        size = _statfs_size_ext4(work, parts[1]["start"] * 512)
        golden = Golden("uefi-pc", img, "uefi", fp, root_uuid, 2, size,
                        extra={"swap_uuid": swap_uuid, "trail_uuid": trail_uuid, "esp_id": esp_id})
        return _finish(golden, work, img, meta)


# ----------------------------------------------------------------------------- Windows-shaped

WIN_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
WIN_MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
WIN_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
WIN_RECOVERY = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"


def _ntfs_populate(fs: Path, files: dict[str, bytes], mnt: Path) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    _run("ntfs-3g", fs, mnt)
    try:
        for rel, data in files.items():
            p = mnt / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    finally:
        _run("umount", mnt)


def windows_pc() -> Golden:
    """1 GiB GPT disk shaped like a Windows install: ESP, MSR, NTFS C:, NTFS recovery at the end."""
    img, meta, cached = _cached("windows-pc")
    if cached:
        return cached
    with _locked("windows-pc"), tempfile.TemporaryDirectory(dir=img.parent) as tmp:
        img, meta, cached = _cached("windows-pc")
        if cached:
            return cached
        t = Path(tmp)
        disk_size = 1024 * MIB
        work = t / "disk.img"
        with open(work, "wb") as f:
            f.truncate(disk_size)
        _sfdisk(work, "label: gpt\n"
                      f"start=2048, size=204800, type={WIN_ESP}, name=\"EFI system partition\", attrs=\"GUID:63\"\n"
                      f"size=32768, type={WIN_MSR}, name=\"Microsoft reserved partition\", attrs=\"GUID:63\"\n"
                      f"size=1583104, type={WIN_DATA}, name=\"Basic data partition\"\n"
                      f"type={WIN_RECOVERY}, attrs=\"RequiredPartition GUID:63\"\n")
        table = _sfdisk_json(work)
        parts = table["partitions"]
        rng = random.Random(7)

        esp = t / "esp.fat"
        with open(esp, "wb") as f:
            f.truncate(parts[0]["size"] * 512)
        _run("mkfs.vfat", "-F", "32", "-s", "1", "-n", "SYSTEM", esp)
        loader = t / "bootmgfw.efi"
        loader.write_bytes(b"MZ" + rng.randbytes(60000))
        _run("mmd", "-i", esp, "::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot", "::/EFI/Boot")
        _run("mcopy", "-i", esp, loader, "::/EFI/Microsoft/Boot/bootmgfw.efi")
        _run("mcopy", "-i", esp, loader, "::/EFI/Boot/bootx64.efi")
        copy_into(esp, work, parts[0]["start"] * 512)
        esp.unlink()

        c_files = {
            "Windows/System32/config/SYSTEM": rng.randbytes(3 * MIB),
            "Windows/System32/drivers/etc/hosts": b"127.0.0.1 localhost\r\n",
            "Users/Alice/Documents/Überweisung März.txt": "Betrag: 42 €\r\n".encode(),
            "Users/Alice/Pictures/holiday.jpg": rng.randbytes(2 * MIB + 123),
            "Program Files/App/app.exe": b"MZ" + rng.randbytes(500000),
        }
        for i in range(40):
            c_files[f"Users/Alice/AppData/cache/{i:02d}.dat"] = rng.randbytes(rng.randrange(1, 20000))
        r_files = {"Recovery/WindowsRE/Winre.wim": rng.randbytes(5 * MIB), "Recovery/WindowsRE/ReAgent.xml": b"<WindowsRE/>\r\n"}

        for idx, files, label in ((2, c_files, "Windows"), (3, r_files, "Recovery")):
            fs = t / f"p{idx + 1}.ntfs"
            with open(fs, "wb") as f:
                f.truncate(parts[idx]["size"] * 512)
            _run("mkntfs", "-q", "-F", "-f", "-L", label, "-p", str(parts[idx]["start"]),
                 "-H", "255", "-S", "63", fs)
            _ntfs_populate(fs, files, t / "mnt")
            copy_into(fs, work, parts[idx]["start"] * 512)
            fs.unlink()

        digests = {
            "3": {rel: hashlib.sha256(data).hexdigest() for rel, data in c_files.items()},
            "4": {rel: hashlib.sha256(data).hexdigest() for rel, data in r_files.items()},
        }
        golden = Golden("windows-pc", img, "none", files=digests,
                        extra={"table": table, "identity": table_identity(work)})
        return _finish(golden, work, img, meta)


def build_all() -> list[Golden]:
    return [bios_pc(), uefi_pc(), windows_pc()]


if __name__ == "__main__":
    for g in build_all():
        print(g.name, g.path, g.fingerprint)
