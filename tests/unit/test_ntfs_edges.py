"""NTFS at its edges (recovery/fs/ntfs.py), on real mkntfs images changed in memory or on disk:
which volume flag means dirty and what is said then, the cluster size encoded as a power of two
in one byte, and the damage message of a boot sector with impossible geometry."""

from __future__ import annotations

import pytest

from recovery.fs import ntfs, probe_partition
from tests import fsimages
from tests.unit.test_fs_ntfs import _poke_volume_flags, probe_file

MiB = fsimages.MiB


@pytest.mark.parametrize("flags,dirty", [(0x0001, True), (0x0002, False), (0x0003, True)])
def test_only_the_dirty_flag_warns_and_the_warning_says_so(tmp_path, flags, dirty):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 16 * MiB)
    _poke_volume_flags(image, flags)
    info = probe_file(image)
    assert not info.whole
    assert info.warnings == (("NTFS is marked dirty (it was not shut down cleanly); "
                              "the image holds the state as Windows left it",) if dirty else ())


@pytest.fixture(scope="module")
def boot(tmp_path_factory):
    return fsimages.make_ntfs(tmp_path_factory.mktemp("ntfs") / "fs.img", 16 * MiB).read_bytes()[:512]


@pytest.mark.parametrize("byte,sectors", [(0x01, 1), (0x80, 128), (0xF4, 4096)])
def test_large_clusters_are_a_power_of_two_in_one_byte(boot, byte, sectors):
    changed = bytearray(boot)
    changed[0x0D] = byte
    assert ntfs._Boot(bytes(changed)).sectors_per_cluster == sectors


@pytest.mark.parametrize("byte,sectors", [(0xF3, 8192), (0x81, 1 << 127), (0x03, 3)])
def test_impossible_geometry_is_named(boot, byte, sectors):
    changed = bytearray(boot)
    changed[0x0D] = byte
    with pytest.raises(ntfs.FsMapError) as err:
        ntfs._Boot(bytes(changed))
    assert str(err.value) == f"NTFS metadata is damaged (boot sector geometry 512 x {sectors})"
    info = probe_partition(lambda o, n: bytes(changed)[o : o + n] if o < 512 else bytes(n), 16 * MiB)
    assert info.whole and info.warnings[0].startswith("NTFS metadata is damaged (boot sector geometry")
