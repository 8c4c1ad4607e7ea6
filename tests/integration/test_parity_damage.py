"""Packs, index files and manifests that repair themselves: bytes overwritten at seeded random
places in a real repository (made by the CLI from a real ext4 disk) are repaired by verify, and
restore gives every file back; damage beyond the parity's bound is named snapshot by snapshot.

The damage tests run over `repo_factory`: a plain and an encrypted repository."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from recovery.repo.parity import Geometry, parity_name, parse_sidecar
from recovery.repo.repository import Repository
from recovery.verify import chunk_table, table_ids
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat
from tests.integration.test_repository_safety import data_tree, one_partition_disk

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module", params=["v2", "v2-encrypted"])
def repo_factory(request, tmp_path_factory):
    """make(path) creates an empty repository at `path` with the CLI; one kind per parameter.
    `make.env` is what commands need to open it (an encrypted one's passphrase file)."""
    env, extra = {}, []
    if request.param == "v2-encrypted":
        secret = tmp_path_factory.mktemp("key") / "passphrase"
        secret.write_text("a passphrase for the damage tests\n")
        secret.chmod(0o600)
        env["LIFEBOAT_PASSPHRASE_FILE"] = str(secret)
        extra = ["--encrypt", "--kdf-memory", "8", "--kdf-iterations", "1", "--kdf-parallelism", "1"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)

        def make(path: Path) -> Path:
            lifeboat("repo", "init", path, *extra)
            return path
        make.env = env
        yield make


@pytest.fixture(autouse=True)
def unlocked(repo_factory, monkeypatch):
    """Each test's commands open the repository as its kind needs (the suite's own fixtures
    clear the passphrase variables before every test)."""
    for key, value in repo_factory.env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def backed_up(repo_factory, tmp_path_factory):
    """A repository holding two snapshots of one disk (every chunk shared) and one of another
    disk, with the original partition trees; copied fresh for each test."""
    work = tmp_path_factory.mktemp("parity")
    repo = repo_factory(work / "repo")
    disks = {}
    for name, seed in (("pc", 3), ("other", 9)):
        tree = data_tree(work / f"tree-{name}", 5, MiB, seed=seed)
        ext = fi.make_ext4(work / f"{name}-root.img", 12 * MiB, tree)
        disk, offset = one_partition_disk(work, name, ext, 16 * MiB)
        disks[name] = (disk, fi.ext_tree(ext))
    sids = {}
    sids["a"] = lifeboat("backup", disks["pc"][0], "--repo", repo, "--name", "pc", "--json", json_out=True).data["snapshot"]
    sids["b"] = lifeboat("backup", disks["pc"][0], "--repo", repo, "--name", "pc-again", "--json", json_out=True).data["snapshot"]
    sids["other"] = lifeboat("backup", disks["other"][0], "--repo", repo, "--name", "other", "--json",
                             json_out=True).data["snapshot"]
    return repo, sids, disks


def objects(repo: Path, kind: str) -> list[Path]:
    pattern = {"pack": "packs/*/*.pack", "index": "index/*.idx", "manifest": "snapshots/*.json"}[kind]
    return sorted(repo.glob(pattern))


def pack_of(repo: Path, sid: str) -> Path:
    """The pack holding the middle data chunk of snapshot `sid`'s partition 1."""
    r = Repository.open(repo)
    part = r.load_manifest(sid).partitions[0]
    ids = list(table_ids(chunk_table(r, part)))
    loc = r.index.get(ids[len(ids) // 2][1])
    return repo / "packs" / loc.pack_id[:2] / f"{loc.pack_id}.pack"


def geometry(path: Path) -> Geometry:
    side = path.with_name(path.name + ".par").read_bytes()
    return parse_sidecar(side, path.name).geometry


def flip_bits(path: Path, rng: random.Random, count: int) -> None:
    data = bytearray(path.read_bytes())
    for at in rng.sample(range(len(data)), count):
        data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def overwrite_run(path: Path, rng: random.Random, length: int) -> None:
    data = bytearray(path.read_bytes())
    at = rng.randrange(0, len(data) - length + 1)
    data[at : at + length] = rng.randbytes(length)
    path.write_bytes(bytes(data))


def overwrite_sectors(path: Path, geo: Geometry, sectors: list[int], rng: random.Random) -> None:
    """Overwrite whole sectors (as a drive's bad sectors leave them) with garbage."""
    data = bytearray(path.read_bytes())
    s = geo.sector_size
    for i in sectors:
        end = min((i + 1) * s, len(data))
        data[i * s : end] = rng.randbytes(end - i * s)
    path.write_bytes(bytes(data))


def one_word(geo: Geometry, count: int, rng: random.Random) -> list[int]:
    """`count` sectors of one code word: the worst place for scattered damage."""
    j = rng.randrange(geo.words)
    return rng.sample(range(j, geo.sectors, geo.words), count)


def damage(path: Path, how: str, seed: int) -> None:
    rng = random.Random(seed)
    geo = geometry(path)
    if how == "bit-flips":
        flip_bits(path, rng, geo.m)                  # each in its own sector at worst
    elif how == "run-1%":
        overwrite_run(path, rng, max(path.stat().st_size // 100, 1))
    elif how == "run-at-bound":
        overwrite_run(path, rng, min(geo.guaranteed_run, path.stat().st_size))
    elif how == "sectors-at-bound":
        overwrite_sectors(path, geo, one_word(geo, geo.guaranteed_sectors, rng), rng)
    else:
        raise AssertionError(how)


def verify(repo: Path, *extra, code=0) -> dict:
    proc = lifeboat("verify", "--repo", repo, "--json", *extra, check=False, json_out=True)
    assert proc.returncode == code, proc.stderr
    return proc.data


def restored_tree(tmp: Path, repo: Path, sid: str) -> dict:
    target = tmp / f"restored-{sid[:8]}.img"
    with open(target, "wb") as f:
        f.truncate(16 * MiB)
    lifeboat("restore", sid, target, "--repo", repo, "--yes")
    from recovery.probe.table import read_layout

    p = read_layout(str(target)).partitions[0]
    return fi.ext_tree(target, p.start, p.size)


@pytest.mark.parametrize("how", ["bit-flips", "run-1%", "run-at-bound", "sectors-at-bound"])
@pytest.mark.parametrize("kind", ["pack", "index", "manifest"])
def test_damage_within_the_bound_is_repaired(backed_up, tmp_path, kind, how):
    repo, sids, disks = backed_up
    for seed in SEEDS:
        work = tmp_path / f"seed{seed}"
        copy = shutil.copytree(repo, work / "repo")
        victims = [pack_of(copy, sids["a"])] if kind == "pack" else objects(copy, kind)
        originals = {v: v.read_bytes() for v in victims}
        for n, victim in enumerate(victims):
            damage(victim, how, seed * 100 + n)
        assert any(v.read_bytes() != originals[v] for v in victims)

        # verify reads through the damage and says what it repaired, in memory only.
        report = verify(copy)
        assert report["ok"] and not report["damaged"], report
        touched = {r["object"] for r in report["repairs"]}
        changed = {str(v.relative_to(copy)) for v in victims if v.read_bytes() != originals[v]}
        assert changed <= touched, (changed, report["repairs"])
        assert all(r["repaired"] and not r["written_back"] for r in report["repairs"])

        # Restore reads through the damage too, and gives every file back.
        if kind != "index" or seed == SEEDS[0]:
            assert restored_tree(work, copy, sids["a"]) == disks["pc"][1]

        # --repair writes each object back exactly as it was written, and sets nothing aside.
        report = verify(copy, "--repair")
        assert all(r["written_back"] for r in report["repairs"]) and report["repairs"]
        for v in victims:
            assert v.read_bytes() == originals[v], v
        assert not list((copy / "damaged-files").rglob("*.*"))
        assert verify(copy)["repairs"] == []


def test_a_damaged_sidecar_is_rewritten_and_its_object_left_alone(backed_up, tmp_path):
    repo, sids, _ = backed_up
    copy = shutil.copytree(repo, tmp_path / "repo")
    pack = pack_of(copy, sids["a"])
    side = Path(parity_name(str(pack)))
    original = side.read_bytes()
    overwrite_run(side, random.Random(5), 3000)          # the first table copy or parity sectors
    report = verify(copy, "--repair")
    assert report["ok"] and [r["object"] for r in report["repairs"]] == [str(pack.relative_to(copy))]
    assert report["repairs"][0]["parity_damaged_sectors"] > 0 and report["repairs"][0]["damaged_sectors"] == 0
    assert side.read_bytes() == original


@pytest.mark.parametrize("seed", SEEDS)
def test_damage_beyond_the_bound_names_exactly_the_snapshots_hit(backed_up, tmp_path, seed):
    repo, sids, disks = backed_up
    copy = shutil.copytree(repo, tmp_path / "repo")
    pack = pack_of(copy, sids["a"])
    assert pack != pack_of(copy, sids["other"])
    geo = geometry(pack)
    rng = random.Random(seed)
    overwrite_sectors(pack, geo, one_word(geo, geo.guaranteed_sectors + 1, rng), rng)

    report = verify(copy, code=6)
    lost = [r for r in report["repairs"] if not r["repaired"]]
    assert [r["object"] for r in lost] == [str(pack.relative_to(copy))]
    assert "beyond what its parity repairs" in lost[0]["message"]
    hit = {(d["snapshot"], d["partition"]) for d in report["damaged"]}
    # Both snapshots of the disk share every chunk; the other disk's snapshot is untouched.
    assert hit == {(sids["a"], 1), (sids["b"], 1)}, report["damaged"]

    # --repair writes nothing back that it could not prove.
    before = pack.read_bytes()
    verify(copy, "--repair", code=6)
    assert pack.read_bytes() == before
    assert restored_tree(tmp_path, copy, sids["other"]) == disks["other"][1]


def test_a_manifest_beyond_the_bound_names_its_snapshot(backed_up, tmp_path):
    repo, sids, _ = backed_up
    copy = shutil.copytree(repo, tmp_path / "repo")
    manifest = copy / "snapshots" / f"{sids['b']}.json"
    geo = geometry(manifest)
    rng = random.Random(4)
    overwrite_sectors(manifest, geo, one_word(geo, geo.guaranteed_sectors + 1, rng), rng)
    report = verify(copy, code=6)
    assert {d["snapshot"] for d in report["damaged"]} == {sids["b"]}
