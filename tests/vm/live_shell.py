"""Working in the live system's shell as a technician would, for VM tests: run one line at a
time and get its exit status, and a small source disk whose files are known."""

from __future__ import annotations

from recovery.probe.table import read_layout
from tests.diskimages import LINUX_FS, MiB, PartSpec, make_disk
from tests.fsimages import ext_tree, fsck_clean, make_ext4, make_tree
from tests.vm.test_iso import ENTER, keys


def shell_step(vm, name: str, command: str, timeout: float = 600) -> int:
    """Run one shell line in the live system; returns its exit status (the last lines of its
    output follow on the console, for the log)."""
    keys(vm, f"{command} >/tmp/{name}.log 2>&1; echo STEP-{name}-$?-; tail -n 3 /tmp/{name}.log" + ENTER)
    return int(vm.wait_for(rf"STEP-{name}-(\d+)-", timeout)[1])


def step_output(vm, name: str, timeout: float = 60) -> str:
    """What step `name` printed, read back from its log file. The console alone cannot tell:
    the next command is typed while the last one's output may still be arriving, and the two
    end up on one line. (The quotes in the typed markers keep their echo from matching.)"""
    keys(vm, f"echo OUT-{name}-BEG''IN; cat /tmp/{name}.log; echo OUT-{name}-E''ND" + ENTER)
    return vm.wait_for(rf"OUT-{name}-BEGIN\r?\n([\s\S]*?)OUT-{name}-END", timeout)[1].replace("\r", "")


def power_off(vm, before: str = "sync") -> None:
    keys(vm, f"{before}; poweroff -f" + ENTER)
    vm.wait_exit(180)


def source_disk(tmp_path, seed: int):
    """A GPT disk with one ext4 partition holding the test tree; returns (image, partition,
    the tree's file hashes)."""
    tree = make_tree(tmp_path / "tree", seed=seed)
    src_fs = make_ext4(tmp_path / "src.fs", 48 * MiB, tree_dir=tree, label="live-src")
    source = tmp_path / "source.img"
    layout = make_disk(source, 64 * MiB, "gpt", [PartSpec(None, LINUX_FS, name="data", content=str(src_fs))])
    part = layout.partitions[0]
    return source, part, ext_tree(source, part.start, part.size)


def assert_restored(target, part, want) -> None:
    """The target's first partition starts where the source's did (the restore may have grown
    it), holds every file of the source, and e2fsck finds it clean."""
    got = read_layout(str(target)).partitions[0]
    assert got.start == part.start
    assert ext_tree(target, got.start, got.size) == want
    assert fsck_clean("ext4", target, got.start, got.size)
