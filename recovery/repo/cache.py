"""Copies, on this machine, of a network repository's objects that never change: index
files, pack footers and snapshot manifests. Each is named by (or checked against) the hash
of its content, so a copy is either right or detected as wrong and fetched again; nothing
ever needs invalidating. With it, opening a repository over the network again costs one
listing plus what is new since, not one download per index file.

Where: LIFEBOAT_CACHE_DIR (\"none\" turns it off); else /var/cache/lifeboat as root (in RAM
on the live system), else ~/.cache/lifeboat; one folder per repository id."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from recovery.repo.format import TRAILER, BlobEntry, encode_footer, pack_id_of


def cache_root() -> Path | None:
    env = os.environ.get("LIFEBOAT_CACHE_DIR")
    if env:
        return None if env.lower() == "none" else Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/lifeboat")
    return Path.home() / ".cache" / "lifeboat"


class IndexCache:
    def __init__(self, folder: Path):
        self.folder = folder
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_repository(cls, repo_id: str) -> "IndexCache | None":
        root = cache_root()
        if root is None or not re.fullmatch(r"[0-9a-f]{8,64}", str(repo_id)):
            return None
        return cls(root / repo_id)

    def get(self, name: str) -> bytes | None:
        try:
            data = (self.folder / name).read_bytes()
        except OSError:
            self.misses += 1
            return None
        self.hits += 1
        return data

    def put(self, name: str, data: bytes) -> None:
        """Keep a copy; a cache that cannot be written only costs the next opening time."""
        path = self.folder / name
        if path.exists():
            return
        tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass

    def drop(self, name: str) -> None:
        try:
            (self.folder / name).unlink()
        except OSError:
            pass

    # -- pack footers: kept as the footer's bytes, checked against the pack id ------------
    def footer(self, pack_id: str, size: int) -> list[BlobEntry] | None:
        name = f"footers/{pack_id}-{size}"
        data = self.get(name)
        if data is None:
            return None
        body = data[: len(data) - TRAILER.size]
        if len(data) < TRAILER.size or pack_id_of(body) != pack_id:
            self.drop(name)
            return None
        try:
            return BlobEntry.unpack_all(body)
        except Exception:                   # noqa: BLE001 - a damaged copy: fetch again
            self.drop(name)
            return None

    def put_footer(self, pack_id: str, size: int, entries: list[BlobEntry]) -> None:
        self.put(f"footers/{pack_id}-{size}", encode_footer(entries))
