"""Format v1 stays readable and writable as v1; `lifeboat repo upgrade` makes it v2 in place,
and a kill -9 at any moment leaves a valid repository that a second run finishes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recovery.repo.parity import parity_name, sidecar_matches
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, lifeboat
from tests.integration.test_repository_safety import data_tree, one_partition_disk


def protected_objects(repo: Path) -> list[Path]:
    return sorted([*repo.glob("packs/*/*.pack"), *repo.glob("index/*.idx"), *repo.glob("snapshots/*.json")])


def sidecars(repo: Path) -> list[Path]:
    return sorted(repo.rglob("*.par"))


def version(repo: Path) -> int:
    return json.loads((repo / "lifeboat-repo.json").read_text())["version"]


def all_protected(repo: Path) -> bool:
    return all(Path(parity_name(str(p))).exists()
               and sidecar_matches(Path(parity_name(str(p))).read_bytes(), p.read_bytes())
               for p in protected_objects(repo))


@pytest.fixture(scope="module")
def v1_repo(tmp_path_factory):
    """A format 1 repository with two snapshots in many small packs."""
    work = tmp_path_factory.mktemp("v1")
    tree = data_tree(work / "tree", 6, MiB, seed=11)
    disk, _ = one_partition_disk(work, "pc", fi.make_ext4(work / "root.img", 12 * MiB, tree), 16 * MiB)
    repo = work / "repo"
    lifeboat("repo", "init", repo, "--format", "1")
    os.environ["LIFEBOAT_PACK_SIZE"] = str(128 * 1024)     # the CLI inherits it
    try:
        for name in ("pc", "pc2"):
            lifeboat("backup", disk, "--repo", repo, "--name", name)
    finally:
        del os.environ["LIFEBOAT_PACK_SIZE"]
    return repo, disk, fi.ext_tree(work / "root.img")


def test_a_v1_repository_keeps_being_written_as_v1(v1_repo, tmp_path):
    repo, disk, _ = v1_repo
    copy = shutil.copytree(repo, tmp_path / "repo")
    assert version(copy) == 1 and not sidecars(copy)
    lifeboat("backup", disk, "--repo", copy, "--name", "third")
    assert version(copy) == 1 and not sidecars(copy)
    assert "parity" not in json.loads((copy / "lifeboat-repo.json").read_text())
    assert lifeboat("verify", "--repo", copy, "--json", json_out=True).data["ok"]


def test_upgrade_adds_parity_to_every_object_then_the_config(v1_repo, tmp_path):
    repo, disk, tree = v1_repo
    copy = shutil.copytree(repo, tmp_path / "repo")
    before = {p: p.read_bytes() for p in protected_objects(copy)}
    out = lifeboat("repo", "upgrade", "--repo", copy, "--json", json_out=True).data
    assert out["version_before"] == 1 and out["version"] == 2
    assert out["added"] == out["objects"] == len(before) > 10
    assert version(copy) == 2 and all_protected(copy)
    assert {p: p.read_bytes() for p in protected_objects(copy)} == before      # only added files
    # Again: nothing to do.
    again = lifeboat("repo", "upgrade", "--repo", copy, "--json", json_out=True).data
    assert again["added"] == 0 and again["version"] == 2
    # New backups write parity; damage is now repaired.
    lifeboat("backup", disk, "--repo", copy, "--name", "third")
    assert all_protected(copy)
    pack = max(protected_objects(copy), key=lambda p: p.stat().st_size if p.suffix == ".pack" else 0)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    pack.write_bytes(bytes(data))
    report = lifeboat("verify", "--repo", copy, "--json", json_out=True).data
    assert report["ok"] and report["repairs"][0]["repaired"], report


def test_upgrade_refuses_to_cement_damage(v1_repo, tmp_path):
    repo, _, _ = v1_repo
    copy = shutil.copytree(repo, tmp_path / "repo")
    pack = next(iter(sorted(copy.glob("packs/*/*.pack"))))
    data = bytearray(pack.read_bytes())
    data[20] ^= 0x10
    pack.write_bytes(bytes(data))
    proc = lifeboat("repo", "upgrade", "--repo", copy, check=False)
    assert proc.returncode == 6, proc.stderr
    assert pack.name[:16] in proc.stdout and "not protected" in proc.stdout
    assert version(copy) == 1 and not Path(parity_name(str(pack))).exists()


def _run_upgrade(repo: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recovery", "repo", "upgrade", "--repo", str(repo)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_at_any_moment_leaves_a_valid_repository_and_a_rerun_finishes(v1_repo, tmp_path):
    repo, _, _ = v1_repo
    total = len(protected_objects(repo))
    rng = random.Random(7)
    # Kill points: before any sidecar, after a seeded number of them, after all of them.
    targets = [0, 1, *rng.sample(range(2, total), 3), total]
    states = set()
    for attempt, target in enumerate(targets):
        copy = shutil.copytree(repo, tmp_path / f"kill{attempt}")
        proc = _run_upgrade(copy)
        deadline = time.monotonic() + 60
        while len(sidecars(copy)) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        v = version(copy)
        states.add((v, len(sidecars(copy)) == total))
        # Valid as it was left: opens, verifies, every snapshot readable.
        report = lifeboat("verify", "--repo", copy, "--json", json_out=True).data
        assert report["ok"] and len(report["checked"]) == 2, (target, report)
        if v == 2:
            assert all_protected(copy)
        lifeboat("repo", "upgrade", "--repo", copy)
        assert version(copy) == 2 and all_protected(copy)
    # Some kills left a v1 repository with only part of the sidecars.
    assert (1, False) in states, states
