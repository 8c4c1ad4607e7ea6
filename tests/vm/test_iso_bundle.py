"""The PyInstaller bundle that goes into the ISO runs here too, and does a real round trip:
back up a disk image, list, verify, restore, and the restored image equals the original."""

from __future__ import annotations

import filecmp
import json
import subprocess
from pathlib import Path

import pytest

from recovery import __version__
from tests.vm.test_iso import ROOT, ensure_iso

pytestmark = pytest.mark.vm

BUNDLE = ROOT / "build" / "freeze" / "dist" / "lifeboat" / "lifeboat"


@pytest.fixture(scope="module")
def bundle() -> Path:
    ensure_iso()   # builds the bundle along with the ISO when stale
    assert BUNDLE.exists(), f"no frozen bundle at {BUNDLE}"
    return BUNDLE


def run(bundle, *args, tmp_path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LIFEBOAT_LOG_DIR": str(tmp_path / "logs")}
    out = subprocess.run([str(bundle), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"bundle {args} -> {out.returncode}: {out.stderr}"
    return out


def test_bundle_version_and_disks(bundle, tmp_path):
    assert run(bundle, "--version", tmp_path=tmp_path).stdout.strip() == f"lifeboat {__version__}"
    disks = json.loads(run(bundle, "disks", "--json", tmp_path=tmp_path).stdout)["disks"]
    assert isinstance(disks, list)
    assert all(d["path"].startswith("/dev/") for d in disks)


def test_bundle_live_driver_does_nothing_without_a_request(bundle, tmp_path):
    out = run(bundle, "live", "--cmdline", "quiet console=ttyS0", tmp_path=tmp_path)
    assert "LIFEBOAT-RESULT" not in out.stdout


def test_bundle_round_trip(bundle, tmp_path):
    subprocess.run([str(ROOT / "scripts" / "demo"), "--make-images", str(tmp_path)], check=True,
                   capture_output=True)
    pc, repo = tmp_path / "demo-pc.img", tmp_path / "repo"
    run(bundle, "repo", "init", repo, tmp_path=tmp_path)
    made = json.loads(run(bundle, "backup", pc, "--repo", repo, "--json", tmp_path=tmp_path).stdout)
    snaps = json.loads(run(bundle, "snapshots", "--repo", repo, "--json", tmp_path=tmp_path).stdout)["snapshots"]
    assert [s["id"] for s in snaps] == [made["snapshot"]]
    assert json.loads(run(bundle, "verify", "--repo", repo, "--json", tmp_path=tmp_path).stdout)["ok"]
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(pc.stat().st_size)
    run(bundle, "restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes", tmp_path=tmp_path)
    # Restore writes the used blocks; everything else was zero on both sides.
    assert filecmp.cmp(pc, target, shallow=False)
