"""TUI test fixtures: real disk-image files (made by scripts/demo --make-images), a real
repository with a real first backup, and helpers to drive the app with Pilot.

Every disk a test shows the app is an image file under its own tmp_path; the app is made with
``system_disks=False`` so the machine's own disks are never listed, let alone touched.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEMO = ROOT / "scripts" / "demo"
SBIN = ":/usr/sbin:/sbin"


def copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)


@pytest.fixture(scope="session")
def golden(tmp_path_factory) -> Path:
    """Built once: demo-pc.img (GPT, FAT32 ESP + ext4 with files), new-disk.img (blank, 256 MiB),
    small.img (blank, 32 MiB: too small), and repo/ holding one verified backup "demo-pc"."""
    base = tmp_path_factory.mktemp("golden")
    subprocess.run([str(DEMO), "--make-images", str(base)], check=True, capture_output=True)
    subprocess.run(["truncate", "-s", "32M", str(base / "small.img")], check=True)
    from recovery.backup import backup
    from recovery.repo.repository import Repository

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", os.environ.get("PATH", "") + SBIN)
        repo = Repository.init(base / "repo")
        backup(str(base / "demo-pc.img"), repo)   # named "demo-pc" after the image, as the TUI would
        repo.close()
    return base


@pytest.fixture
def machine(golden, tmp_path, monkeypatch) -> Path:
    """A private copy of the golden images and repository; the test runs inside it, so the
    app shows short relative paths (demo-pc.img, new-disk.img)."""
    work = tmp_path / "machine"
    work.mkdir()
    for name in ("demo-pc.img", "new-disk.img", "small.img", "repo"):
        copy_tree(golden / name, work / name)
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def slow_pc(machine) -> Path:
    """slow-pc.img: GPT with one ext4 partition holding ~240 MB of word salad, which zstd at
    level 19 compresses at ~7 MB/s per core: a backup long enough to be cancelled by hand.
    (Counting numbers or base64, used before, go 20-30 MB/s: a 2-core machine finished before
    the Stop button was pressed.) Every 1 MiB window differs, so nothing deduplicates."""
    files = machine / "slow-files"
    files.mkdir()
    rng = random.Random(19)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(5000)]
    salad = " ".join(rng.choices(words, k=1_500_000)).encode()
    with open(files / "text.txt", "wb") as out:
        for i in range(24):
            out.write(b"%d " % i * (i + 1) + salad)
    part = machine / "slow-part.img"
    subprocess.run(["truncate", "-s", "300M", str(part)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "slow", "-d", str(files), str(part)], check=True)
    disk = machine / "slow-pc.img"
    subprocess.run(["truncate", "-s", "302M", str(disk)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nstart=2048, size=614400, type=L\n",
                   text=True, check=True)
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"],
                   check=True)
    part.unlink()
    return disk


@pytest.fixture(autouse=True)
def sbin_on_path(monkeypatch):
    """mkfs.*, sfdisk and debugfs live in /usr/sbin, which a normal user's PATH lacks."""
    monkeypatch.setenv("PATH", os.environ.get("PATH", "") + SBIN)


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    """What the app remembers (network locations, SSH host keys) goes to the test's own folder,
    never the machine's /var/lib/lifeboat."""
    monkeypatch.setenv("LIFEBOAT_DATA_DIR", str(tmp_path / "lifeboat-data"))
