"""The copies kept on this machine of a network repository's unchanging objects
(recovery/repo/cache.py): where they live, what counts as a hit, and that a wrong or damaged
copy is dropped and fetched again rather than trusted. Real files in a scratch folder."""

from __future__ import annotations

import os
from pathlib import Path

from recovery.repo.cache import IndexCache, cache_root
from recovery.repo.format import BlobEntry, encode_footer, pack_id_of, TRAILER


def _entries(n: int) -> list[BlobEntry]:
    return [BlobEntry(bytes([i]) * 32, 8 + i * 100, 100, 200, 1, 1) for i in range(n)]


def test_the_cache_folder_follows_the_environment_then_the_user(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    for off in ("none", "NONE", "None"):
        monkeypatch.setenv("LIFEBOAT_CACHE_DIR", off)
        assert cache_root() is None
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for euid, expected in [(0, Path("/var/cache/lifeboat")), (1000, tmp_path / "home" / ".cache" / "lifeboat")]:
        monkeypatch.setattr("recovery.repo.cache.os.geteuid", lambda: euid)
        assert cache_root() == expected
        monkeypatch.delenv("LIFEBOAT_CACHE_DIR", raising=False)
        assert cache_root() == expected


def test_a_cache_is_made_only_for_a_plain_repository_id(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path))
    cache = IndexCache.for_repository("0123abcd")
    assert cache is not None and cache.folder == tmp_path / "0123abcd"
    assert IndexCache.for_repository("a" * 64).folder == tmp_path / ("a" * 64)
    for bad in ("0123abc", "a" * 65, "0123ABCD", "../../etc", "0123abcd/x", "", None):
        assert IndexCache.for_repository(bad) is None, bad
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", "none")
    assert IndexCache.for_repository("0123abcd") is None


def test_put_keeps_the_first_copy_and_get_counts_hits_and_misses(tmp_path):
    cache = IndexCache(tmp_path / "repo")
    assert cache.get("index/ab") is None and (cache.hits, cache.misses) == (0, 1)
    cache.put("index/ab", b"first")                 # makes the folders it needs
    cache.put("index/ab", b"second")                # a name's content never changes: kept as is
    assert cache.get("index/ab") == b"first" and (cache.hits, cache.misses) == (1, 1)
    assert cache.get("index/ab") == b"first" and (cache.hits, cache.misses) == (2, 1)
    assert sorted(p.name for p in (tmp_path / "repo" / "index").iterdir()) == ["ab"]   # no temporary left
    cache.drop("index/ab")
    cache.drop("index/ab")                          # already gone: nothing to do
    assert cache.get("index/ab") is None and (cache.hits, cache.misses) == (2, 2)


def test_a_cache_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    (tmp_path / "repo").write_bytes(b"a file where the folder would go")
    cache = IndexCache(tmp_path / "repo")
    cache.put("index/ab", b"data")                  # no error: only the next opening is slower
    assert cache.get("index/ab") is None
    (tmp_path / "other" / "index" / "ab").mkdir(parents=True)   # the copy's name is taken by a folder
    cache = IndexCache(tmp_path / "other")
    cache.put("index/ab", b"data")                  # exists: left alone
    assert (tmp_path / "other" / "index" / "ab").is_dir()
    assert cache.get("index/ab") is None


def test_footers_are_kept_as_bytes_and_checked_against_the_pack_id(tmp_path):
    cache = IndexCache(tmp_path)
    entries = _entries(3)
    footer = encode_footer(entries)
    pid = pack_id_of(footer[: len(footer) - TRAILER.size])
    cache.put_footer(pid, 4096, entries)
    assert (tmp_path / "footers" / f"{pid}-4096").read_bytes() == footer
    assert cache.footer(pid, 4096) == entries
    assert cache.footer(pid, 4097) is None          # another size: another object
    # a copy that does not hash to its pack's id is dropped, not used
    other = "0" * 64
    (tmp_path / "footers" / f"{other}-4096").write_bytes(footer)
    assert cache.footer(other, 4096) is None
    assert not (tmp_path / "footers" / f"{other}-4096").exists()
    # a copy shorter than a trailer is dropped
    (tmp_path / "footers" / f"{pid}-1").write_bytes(b"short")
    assert cache.footer(pid, 1) is None and not (tmp_path / "footers" / f"{pid}-1").exists()


def test_a_footer_copy_that_hashes_right_but_does_not_decode_is_dropped(tmp_path):
    cache = IndexCache(tmp_path)
    body = b"x" * 33                                # not a whole number of entries
    pid = pack_id_of(body)
    name = tmp_path / "footers" / f"{pid}-9"
    name.parent.mkdir()
    name.write_bytes(body + bytes(TRAILER.size))
    assert cache.footer(pid, 9) is None and not name.exists()
    empty = encode_footer([])
    pid = pack_id_of(empty[: len(empty) - TRAILER.size])
    cache.put_footer(pid, 56, [])
    assert cache.footer(pid, 56) == []
