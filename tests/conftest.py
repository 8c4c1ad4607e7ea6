"""Shared fixtures. Tests create every disk they touch (image files under tmp_path, and loop
devices attached to those files); nothing here ever opens a device it did not create."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    is_root = os.geteuid() == 0
    for item in items:
        if "loop" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root for loop devices"))
        if "vm" in item.keywords and not shutil.which("qemu-system-x86_64"):
            item.add_marker(pytest.mark.skip(reason="needs qemu-system-x86_64"))


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path):
    """Small packs so small test data walks the multi-pack paths; no user config leaks in."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(4 * 1024 * 1024))
    monkeypatch.setenv("LIFEBOAT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("LIFEBOAT_REPO", raising=False)


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    """Run a tool, failing the test with its stderr when it fails."""
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run([str(c) for c in cmd], **kw)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{cmd} failed: {exc.stderr}") from exc


class LoopDevices:
    """Attaches image files that this test session made under pytest's temporary folder;
    detaches them all after."""

    def __init__(self, base: Path):
        self.tmp_path = base.resolve()
        self.attached: list[str] = []

    def attach(self, image: Path, sector_size: int = 512) -> str:
        image = Path(image).resolve()
        if self.tmp_path not in image.parents:
            raise AssertionError(f"refusing to attach {image}: not made by this test")
        cmd = ["losetup", "--find", "--show"]
        if sector_size != 512:
            cmd += ["-b", str(sector_size)]
        dev = run(*cmd, image).stdout.strip()
        self.attached.append(dev)
        # No udev here: the kernel makes partition nodes only when asked.
        subprocess.run(["partx", "-a", dev], capture_output=True)
        return dev

    def detach_all(self) -> None:
        for dev in reversed(self.attached):
            subprocess.run(["partx", "-d", dev], capture_output=True)
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.attached.clear()


@pytest.fixture
def loops(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices")
    devices = LoopDevices(tmp_path_factory.getbasetemp())
    yield devices
    devices.detach_all()
