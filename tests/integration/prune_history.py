"""A repository with a history: one disk-image file changed a little between backups, each
version kept as a file, so any snapshot can be restored and compared byte for byte."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from tests.integration.engine_fixtures import MiB, lifeboat

WINDOW = 64 * 1024


def new_repo(where) -> str:
    """A repository with 64 KiB chunks (many blobs in a small disk); packs are kept small by
    LIFEBOAT_PACK_SIZE (see `small_packs`)."""
    lifeboat("repo", "init", where, "--chunk-size", WINDOW)
    return str(where)


def history(work: Path, repo: str, count: int, *, name: str = "pc", size: int = 8 * MiB,
            changed: int = 8, seed: int = 1) -> list[tuple[str, Path]]:
    """`count` backups of one disk, `changed` windows rewritten between two; returns (snapshot
    id, the disk's bytes at that backup) oldest first. Backups are a second apart, so their
    times (kept to the second) differ."""
    rng = random.Random(seed)
    disk = work / f"{name}.img"
    disk.write_bytes(rng.randbytes(size))
    out = []
    for i in range(count):
        if i:
            with open(disk, "r+b") as f:
                for _ in range(changed):
                    f.seek(rng.randrange(size // WINDOW) * WINDOW)
                    f.write(rng.randbytes(WINDOW))
        sid = lifeboat("backup", disk, "--repo", repo, "--name", name, "--json", json_out=True).data["snapshot"]
        version = work / f"{name}-v{i}.img"
        shutil.copyfile(disk, version)
        out.append((sid, version))
        time.sleep(1.02 - time.time() % 1)       # the next manifest is written in a later second
    return out


def restores_exactly(repo: str, sid: str, expected: Path, work: Path) -> None:
    """Restore one snapshot onto a fresh image file; every byte equals the disk it was made from."""
    target = work / f"restored-{sid[:8]}.img"
    target.unlink(missing_ok=True)
    with open(target, "wb") as f:
        f.truncate(expected.stat().st_size)
    lifeboat("restore", sid, target, "--repo", repo, "--yes")
    assert target.read_bytes() == expected.read_bytes(), f"snapshot {sid[:8]} does not restore bit for bit"
    target.unlink()


def stored_objects(repo) -> dict[str, int]:
    """Every object of a repository folder (packs, index files, manifests, marks) and its size."""
    root = Path(repo)
    return {str(p.relative_to(root)): p.stat().st_size
            for sub in ("packs", "index", "snapshots", "verified", "damaged") if (root / sub).is_dir()
            for p in (root / sub).rglob("*") if p.is_file()}
