"""After a restore on a UEFI machine: make sure a firmware boot entry starts the restored disk.

    ensure_boot_entry(disk, layout) -> note | None

None when the running system was not started by UEFI (no /sys/firmware/efi/efivars). Else:
find the EFI system partition in `layout`, read its folders with mtools (no mount), pick the
boot loader (Windows Boot Manager, a distribution's shim or GRUB, else the removable-media
fallback \\EFI\\BOOT\\BOOTX64.EFI), and create an entry with efibootmgr unless one already
points at that partition GUID and path. Returns one line saying what was done.
"""

from __future__ import annotations

import os
import re
import stat

from recovery.errors import ToolError
from recovery.model.layout import Layout, PartitionEntry
from recovery.plan.layout import role
from recovery.host import tools
from recovery.host.tools import first_line


EFIVARS = "/sys/firmware/efi/efivars"
FALLBACK = ("UEFI OS", "\\EFI\\BOOT\\BOOTX64.EFI")
SHIM_OR_GRUB = ("shimx64.efi", "grubx64.efi")


def ensure_boot_entry(disk: str, layout: Layout, efivars: str = EFIVARS) -> str | None:
    if not os.path.isdir(efivars):
        return None
    esp = find_esp(layout)
    if esp is None:
        return "No EFI system partition on the restored disk: no UEFI boot entry was made."
    if not _is_block(disk):
        return "The target is a disk-image file: no UEFI boot entry was made for it."
    present = esp_files(disk, esp)
    choice = pick_loader(present)
    if choice is None:
        return (f"No boot loader found on the EFI system partition (partition {esp.number}): "
                f"no UEFI boot entry was made.")
    label, path = choice
    listing = tools.step(["efibootmgr", "-v"])
    if listing.returncode != 0:
        raise ToolError(f"cannot read the UEFI boot entries: {first_line(listing.stderr)}; the disk is restored, "
                        f"choose it in the firmware's boot menu")
    existing = find_entry(listing.stdout, esp.uuid, esp.number, path, layout.disk_id)
    if existing:
        return f"The UEFI boot entry Boot{existing} ({label}) already starts {path} on the restored disk."
    made = tools.step(["efibootmgr", "--create", "--disk", disk, "--part", str(esp.number),
                 "--label", label, "--loader", path])
    if made.returncode != 0:
        raise ToolError(f"efibootmgr could not add a UEFI boot entry for {path}: {first_line(made.stderr)}; "
                        f"the disk is restored, choose it in the firmware's boot menu")
    number = find_entry(made.stdout, esp.uuid, esp.number, path, layout.disk_id) or _new_number(made.stdout, label)
    where = f"Boot{number} " if number else ""
    return f"Added the UEFI boot entry {where}\"{label}\" for {path} on partition {esp.number}."


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def find_esp(layout: Layout) -> PartitionEntry | None:
    esps = [p for p in layout.data_partitions() if role(p) == "EFI system"]
    return esps[0] if esps else None


def esp_files(disk: str, esp: PartitionEntry) -> set[str]:
    """Upper-case \\EFI\\... paths of the .efi files one and two folders below \\EFI on the ESP."""
    image = f"{disk}@@{esp.start}"
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    found: set[str] = set()
    top = _mdir(image, "::/EFI", env)
    for name in top:
        for f in _mdir(image, f"::/EFI/{name}", env):
            if f.upper().endswith(".EFI"):
                found.add(f"\\EFI\\{name}\\{f}".upper())
        if name.upper() == "MICROSOFT":
            for f in _mdir(image, f"::/EFI/{name}/Boot", env):
                if f.upper().endswith(".EFI"):
                    found.add(f"\\EFI\\{name}\\BOOT\\{f}".upper())
    return found


def _mdir(image: str, folder: str, env: dict) -> list[str]:
    res = tools.run(["mdir", "-b", "-i", image, folder], check=False, env=env)
    if res.returncode != 0:
        return []
    names = []
    for line in res.stdout.splitlines():
        name = line.strip().rstrip("/").rsplit("/", 1)[-1]
        if name and name not in (".", ".."):
            names.append(name)
    return names


def pick_loader(present: set[str]) -> tuple[str, str] | None:
    """(entry label, loader path) in order of preference, from upper-case paths on the ESP."""
    if "\\EFI\\MICROSOFT\\BOOT\\BOOTMGFW.EFI" in present:
        return "Windows Boot Manager", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
    distros = sorted({p.split("\\")[2] for p in present if p.count("\\") == 3}
                     - {"BOOT", "MICROSOFT"})
    if "DEBIAN" in distros:
        distros.remove("DEBIAN")
        distros.insert(0, "DEBIAN")
    for d in distros:
        for loader in SHIM_OR_GRUB:
            if f"\\EFI\\{d}\\{loader.upper()}" in present:
                return d.lower(), f"\\EFI\\{d.lower()}\\{loader}"
    if FALLBACK[1] in present:
        return FALLBACK
    return None


ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})\*?\s+(.*)$")


def find_entry(efibootmgr_v: str, part_uuid: str | None, part_number: int, path: str,
               disk_id: str | None = None) -> str | None:
    """The number (e.g. "0003") of an entry that starts `path` on that partition, if any."""
    want_path = path.replace("/", "\\").upper()
    for line in efibootmgr_v.splitlines():
        m = ENTRY.match(line.strip())
        if not m:
            continue
        text = m.group(2)
        hd = re.search(r"HD\((\d+),(GPT|MBR),([^,]+),", text, re.IGNORECASE)
        f = re.search(r"File\(([^)]*)\)", text, re.IGNORECASE)
        if not hd or not f:
            continue
        if f.group(1).replace("/", "\\").upper() != want_path:
            continue
        if hd.group(2).upper() == "GPT":
            if part_uuid and hd.group(3).upper() == part_uuid.upper():
                return m.group(1).upper()
        elif int(hd.group(1)) == part_number and (disk_id is None or _same_id(hd.group(3), disk_id)):
            return m.group(1).upper()
    return None


def _same_id(a: str, b: str) -> bool:
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return a.lower() == b.lower()


def _new_number(output: str, label: str) -> str | None:
    for line in output.splitlines():
        m = ENTRY.match(line.strip())
        if m and label in m.group(2):
            return m.group(1).upper()
    return None
