"""Damaged marks left by verify, the chunk proof restore relies on, and "latest" per machine,
on real repositories made by real backups."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.errors import RepositoryError
from recovery.events import Progress
from recovery.repo.format import KIND_DATA
from recovery.repo.packs import pack_path, read_footer
from recovery.repo.repository import Repository
from recovery.verify import chunk_table, prove_blobs, table_ids
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat
from tests.integration.test_repository_safety import data_tree, one_partition_disk


def small_pc(tmp_path: Path, name: str, seed: int) -> Path:
    tree = data_tree(tmp_path / f"tree-{name}", 6, MiB, seed=seed)
    disk, _ = one_partition_disk(tmp_path, name, fi.make_ext4(tmp_path / f"{name}-root.img", 16 * MiB, tree), 24 * MiB)
    return disk


def data_blob(repo_path: Path) -> tuple[bytes, Path, int, int]:
    """A data chunk some snapshot uses: its id, pack file, offset and stored length."""
    repo = Repository.open(repo_path)
    index = repo.index
    for pack_id in index.packs:
        path = pack_path(repo.path, pack_id)
        for e in read_footer(path):
            if e.kind == KIND_DATA and e.stored_len > 64:
                return e.id, path, e.offset, e.stored_len
    raise AssertionError("no data chunk in the repository")


def overwrite(path: Path, offset: int, data: bytes) -> bytes:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(len(data))
        f.seek(offset)
        f.write(data)
    return old


def snapshot_lines(repo: Path) -> dict[str, str]:
    out = lifeboat("snapshots", "--repo", repo).stdout.splitlines()
    return {line.split()[0]: line for line in out}


def test_verify_marks_damage_and_a_clean_verify_clears_it(tmp_path):
    disk = small_pc(tmp_path, "pc", seed=3)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo, "--format", "1")  # no parity: damage stays
    first = lifeboat("backup", disk, "--repo", repo, "--name", "pc", "--json", json_out=True).data["snapshot"]
    second = lifeboat("backup", disk, "--repo", repo, "--name", "pc", "--json", json_out=True).data["snapshot"]
    assert first != second
    lines = snapshot_lines(repo)
    assert all("verified" in lines[s[:8]] for s in (first, second)), lines

    bid, pack, offset, stored_len = data_blob(repo)
    where = offset + stored_len // 2
    original = overwrite(pack, where, bytes(b ^ 0xFF for b in b"\x00\x11\x22\x33"))

    proc = lifeboat("verify", "--repo", repo, "--json", check=False, json_out=True)
    assert proc.returncode == 6, proc.stderr
    assert {d["snapshot"] for d in proc.data["damaged"]} == {first, second}

    # Both snapshots share the chunk: both say DAMAGED with what, neither says verified.
    lines = snapshot_lines(repo)
    for sid in (first, second):
        line = lines[sid[:8]]
        assert "DAMAGED: partition 1: 1 chunk(s) damaged or missing" in line, line
        assert "verified" not in line, line
        assert (repo / "damaged" / f"{sid}.json").exists()
        assert not (repo / "verified" / f"{sid}.json").exists()
    listed = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    for s in listed:
        assert s["verified"] is None
        assert s["damaged"] and s["damaged"][0].startswith("partition 1: 1 chunk(s) damaged"), s

    # Restore the bytes: a clean verify clears the marks.
    overwrite(pack, where, original)
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    lines = snapshot_lines(repo)
    for sid in (first, second):
        assert "DAMAGED" not in lines[sid[:8]] and lines[sid[:8]].endswith("verified"), lines[sid[:8]]
        assert not (repo / "damaged" / f"{sid}.json").exists()
    listed = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert all(s["damaged"] is None and s["verified"] for s in listed)


def test_prove_blobs_names_exactly_the_damaged_chunk(tmp_path):
    disk = small_pc(tmp_path, "pc", seed=5)
    repo_path = tmp_path / "repo"
    lifeboat("repo", "init", repo_path, "--format", "1")  # no parity: damage stays
    lifeboat("backup", disk, "--repo", repo_path, "--name", "pc")
    repo = Repository.open(repo_path)
    every = [bytes.fromhex(b) for b in set().union(*(repo.load_manifest(s).all_blob_ids()
                                                      for s in repo.snapshot_ids()))]
    for sid in repo.snapshot_ids():
        for part in repo.load_manifest(sid).partitions:
            every += [bid for _, bid in table_ids(chunk_table(repo, part))]
    assert len(set(every)) > 6

    events: list[Progress] = []
    assert prove_blobs(repo, every, on_event=events.append) == set()
    assert events and events[-1].phase == "proof" and events[-1].done == events[-1].total > 6 * MiB

    bid, pack, offset, stored_len = data_blob(repo_path)
    overwrite(pack, offset + stored_len // 2, b"\x01\x02\x03\x04")
    stranger = bytes(range(32))
    repo = Repository.open(repo_path)
    assert prove_blobs(repo, every + [stranger], phase="restore") == {bid, stranger}
    assert prove_blobs(repo, [bid]) == {bid}
    others = [b for b in every if b != bid]
    assert prove_blobs(repo, others) == set()


def test_latest_is_chosen_per_machine(tmp_path):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    alpha = lifeboat("backup", small_pc(tmp_path, "alpha", seed=6), "--repo", repo, "--name", "alpha",
                     "--json", json_out=True).data["snapshot"]
    beta = lifeboat("backup", small_pc(tmp_path, "beta", seed=7), "--repo", repo, "--name", "beta",
                    "--json", json_out=True).data["snapshot"]

    proc = lifeboat("verify", "latest", "--repo", repo, check=False)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("lifeboat: the repository holds backups of several computers (alpha, beta); "
                                   "choose one with --name")
    picked = lifeboat("verify", "latest", "--repo", repo, "--name", "alpha", "--json", json_out=True).data
    assert picked["checked"] == [alpha]
    picked = lifeboat("verify", "latest", "--repo", repo, "--name", "beta", "--json", json_out=True).data
    assert picked["checked"] == [beta]

    # The disk's serial picks its machine; a serial nobody has falls back to the refusal.
    r = Repository.open(repo)
    m = r.load_manifest(alpha)
    m.source = {**m.source, "serial": "S-ALPHA"}
    alpha_serial = r.write_manifest(m)
    assert r.resolve("latest", serial="S-ALPHA") == alpha_serial
    assert r.resolve("latest", name="beta", serial="S-ALPHA") == beta
    with pytest.raises(RepositoryError, match=r"several computers \(alpha, beta\)"):
        r.resolve("latest", serial="S-NOBODY")
    assert r.resolve(alpha[:10]) == alpha

    # A snapshot whose manifest is damaged is never "latest", and is not a machine.
    for sid in (alpha, alpha_serial):
        (repo / "snapshots" / f"{sid}.json").unlink()
    (repo / "snapshots" / f"{'0' * 64}.json").write_text("{}")
    assert r.resolve("latest") == beta
    line = snapshot_lines(repo)["00000000"]
    assert "DAMAGED: snapshot 00000000: its manifest file is damaged" in line
