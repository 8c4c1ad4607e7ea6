"""UEFI boot entry: the ESP is read with mtools, the loader chosen, existing entries recognised."""

from __future__ import annotations

import subprocess

from recovery.apply.efiboot import ensure_boot_entry, esp_files, find_entry, find_esp, pick_loader
from tests.diskimages import ESP, LINUX_FS, MiB, PartSpec, make_disk


def esp_disk(tmp_path, folders: dict[str, list[str]]):
    fat = tmp_path / "esp.fat"
    with open(fat, "wb") as f:
        f.truncate(40 * MiB)
    subprocess.run(["mkfs.vfat", "-F", "32", "-s", "1", str(fat)], check=True, capture_output=True)
    blob = tmp_path / "loader.efi"
    blob.write_bytes(b"MZ" + bytes(100))
    for folder, files in folders.items():
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            subprocess.run(["mmd", "-D", "s", "-i", str(fat), "::/" + "/".join(parts[:i])], capture_output=True)
        for name in files:
            subprocess.run(["mcopy", "-i", str(fat), str(blob), f"::/{folder}/{name}"], check=True)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 96 * MiB, "gpt", [PartSpec(40 * MiB, ESP, content=str(fat)), PartSpec(8 * MiB, LINUX_FS)])
    return img, layout


def test_windows_boot_manager_is_preferred(tmp_path):
    img, layout = esp_disk(tmp_path, {"EFI/Microsoft/Boot": ["bootmgfw.efi", "memtest.efi"],
                                      "EFI/Boot": ["bootx64.efi"]})
    esp = find_esp(layout)
    assert esp.number == 1
    present = esp_files(str(img), esp)
    assert "\\EFI\\MICROSOFT\\BOOT\\BOOTMGFW.EFI" in present and "\\EFI\\BOOT\\BOOTX64.EFI" in present
    assert pick_loader(present) == ("Windows Boot Manager", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi")


def test_debian_shim_then_grub_then_fallback(tmp_path):
    img, layout = esp_disk(tmp_path, {"EFI/debian": ["shimx64.efi", "grubx64.efi", "mmx64.efi"],
                                      "EFI/BOOT": ["BOOTX64.EFI"]})
    present = esp_files(str(img), find_esp(layout))
    assert pick_loader(present) == ("debian", "\\EFI\\debian\\shimx64.efi")
    assert pick_loader(present - {"\\EFI\\DEBIAN\\SHIMX64.EFI"}) == ("debian", "\\EFI\\debian\\grubx64.efi")
    assert pick_loader({"\\EFI\\BOOT\\BOOTX64.EFI"}) == ("UEFI OS", "\\EFI\\BOOT\\BOOTX64.EFI")
    assert pick_loader(set()) is None


def test_existing_entry_is_recognised_by_partition_guid_and_path():
    out = ("BootCurrent: 0001\nBootOrder: 0003,0001\n"
           "Boot0001* UEFI QEMU HARDDISK\tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)N.....YM....R,Y.\n"
           "Boot0003* debian\tHD(1,GPT,4a2e1f3c-0d1e-4f55-8a2b-7c9e0f1a2b3c,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)\n"
           "Boot0004* old\tHD(1,MBR,0x1eb0a7c1,0x800,0x100000)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n")
    guid = "4A2E1F3C-0D1E-4F55-8A2B-7C9E0F1A2B3C"
    assert find_entry(out, guid, 1, "\\EFI\\debian\\shimx64.efi") == "0003"
    assert find_entry(out, guid, 1, "\\EFI\\debian\\grubx64.efi") is None
    assert find_entry(out, "00000000-0000-0000-0000-000000000001", 1, "\\EFI\\debian\\shimx64.efi") is None
    assert find_entry(out, None, 1, "\\EFI\\BOOT\\BOOTX64.EFI", "0x1eb0a7c1") == "0004"
    assert find_entry(out, None, 1, "\\EFI\\BOOT\\BOOTX64.EFI", "0x12345678") is None


def test_not_on_uefi_returns_none(tmp_path):
    img, layout = esp_disk(tmp_path, {"EFI/BOOT": ["BOOTX64.EFI"]})
    assert ensure_boot_entry(str(img), layout, efivars=str(tmp_path / "no-efivars")) is None


def test_image_file_target_gets_a_note_not_an_entry(tmp_path):
    img, layout = esp_disk(tmp_path, {"EFI/BOOT": ["BOOTX64.EFI"]})
    (tmp_path / "efivars").mkdir()
    note = ensure_boot_entry(str(img), layout, efivars=str(tmp_path / "efivars"))
    assert note == "The target is a disk-image file: no UEFI boot entry was made for it."
    no_esp = layout.with_partitions([p for p in layout.partitions if p.number != 1])
    assert "No EFI system partition" in ensure_boot_entry(str(img), no_esp, efivars=str(tmp_path / "efivars"))
