"""Encrypted repositories through the real CLI: unlocking, keys, round trips, keyed ids,
tamper detection, and where a passphrase must never appear."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from tests import fsimages as fi
from tests.integration.engine_fixtures import ROOT, PC, assert_restored, build_gpt_pc, lifeboat

PASSPHRASE = "lantern-orchard-7-quietly"
# Argon2id made cheap for tests (the figures are stored in each key object).
FAST_KDF = ("--kdf-memory", "8", "--kdf-iterations", "1", "--kdf-parallelism", "1")
WRONG_PASSPHRASE = 11
# The last commit whose reader knows repository format 1 only.
V1_READER = "efd212d"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fi.make_tree(tmp_path_factory.mktemp("tree") / "t")


@pytest.fixture(scope="module")
def gpt_pc(tmp_path_factory, tree) -> PC:
    return build_gpt_pc(tmp_path_factory.mktemp("gpt-pc"), tree)


def secret_file(where: Path, text: str) -> Path:
    where.write_text(text + "\n")
    where.chmod(0o600)
    return where


def init_encrypted(tmp_path: Path, name: str = "repo") -> tuple[Path, Path, str]:
    """An encrypted repository, its passphrase file and its recovery code."""
    pw = secret_file(tmp_path / f"{name}.pass", PASSPHRASE)
    repo = tmp_path / name
    made = lifeboat("repo", "init", repo, "--encrypt", "--passphrase-file", pw, *FAST_KDF, "--json",
                    json_out=True).data
    assert made["encrypted"] is True
    return repo, pw, made["recovery_code"]


def files_state(repo: Path) -> dict:
    return {str(p.relative_to(repo)): (p.stat().st_size, p.stat().st_mtime_ns, blake3.blake3(p.read_bytes()).hexdigest())
            for p in sorted(repo.rglob("*")) if p.is_file()}


def test_backup_restore_verify_ls_of_an_encrypted_repository(tmp_path, gpt_pc, tree, monkeypatch):
    repo, pw, _ = init_encrypted(tmp_path)
    monkeypatch.setenv("LIFEBOAT_PASSPHRASE_FILE", str(pw))
    made = lifeboat("backup", gpt_pc.disk, "--repo", repo, "--name", "Accounting-PC-Morgan", "--json",
                    json_out=True).data
    target = tmp_path / "new-disk.img"
    with open(target, "wb") as f:
        f.truncate(gpt_pc.disk.stat().st_size)
    # restore through the option, not the environment
    done = lifeboat("restore", "latest", target, "--repo", repo, "--passphrase-file", pw, "--yes", "--json",
                    json_out=True).data
    assert done["snapshot"] == made["snapshot"]
    assert done["bytes_written"] == made["bytes_used"]
    assert_restored(gpt_pc, target)
    checked = lifeboat("verify", "--repo", repo, "--json", json_out=True).data
    assert checked["ok"] and checked["checked"] == [made["snapshot"]]
    listed = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data
    assert [s["name"] for s in listed["snapshots"]] == ["Accounting-PC-Morgan"]
    ls = lifeboat("ls", "latest", "2:/", "--repo", repo, "--json", json_out=True).data
    assert ls["entries"]
    got = tmp_path / "got"
    lifeboat("get", "latest", "2:/", got, "--repo", repo)
    copied = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert copied and all((tree / name).read_bytes() == (got / name).read_bytes()
                          for name in copied if (tree / name).is_file())
    # import of the same disk as a raw image: the same keyed ids, so next to nothing is new
    imported = lifeboat("import", gpt_pc.disk, "--repo", repo, "--name", "imported", "--json", json_out=True).data
    assert imported["bytes_stored_new"] < made["bytes_used"] // 50
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]

    # Nothing readable at rest: no name, no file content, no plain JSON manifest.
    marker = sorted(p for p in tree.rglob("*") if p.is_file() and p.stat().st_size > 64)[0].read_bytes()[:48]
    for path in repo.rglob("*"):
        if path.is_file() and path.name != "lifeboat-repo.json" and path.parent.name != "keys":
            data = path.read_bytes()
            assert b"Accounting-PC-Morgan" not in data, path
            assert marker not in data, path
    for manifest in (repo / "snapshots").iterdir():
        with pytest.raises(ValueError):
            json.loads(manifest.read_bytes())


def test_an_interrupted_restore_resumes_by_the_keyed_ids(tmp_path, gpt_pc, monkeypatch):
    """The re-run checks what is on the target against the repository's keyed chunk ids."""
    from recovery.errors import Cancelled
    from recovery.events import CancelToken, Progress
    from recovery.jobs import RestoreJob, run_job
    from recovery.repo.repository import Repository

    repo, pw, _ = init_encrypted(tmp_path)
    monkeypatch.setenv("LIFEBOAT_PASSPHRASE_FILE", str(pw))
    made = lifeboat("backup", gpt_pc.disk, "--repo", repo, "--json", json_out=True).data
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(gpt_pc.disk.stat().st_size)
    token = CancelToken()

    def stop_half_way(event):      # at the first progress report of written data
        if isinstance(event, Progress) and event.phase == "restore" and 0 < event.done < event.total:
            token.cancel()

    opened = Repository.open(repo)
    with pytest.raises(Cancelled):
        run_job(RestoreJob(opened, "latest", str(target)), confirm=lambda plan: True, on_event=stop_half_way,
                cancel=token)
    opened.close()
    done = lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--json", json_out=True).data
    assert 0 < done["bytes_skipped"] < made["bytes_used"]
    assert_restored(gpt_pc, target)


def test_wrong_passphrase_is_one_line_its_own_code_and_writes_nothing(tmp_path, gpt_pc):
    repo, pw, _ = init_encrypted(tmp_path)
    lifeboat("backup", gpt_pc.disk, "--repo", repo, "--passphrase-file", pw)
    bad = secret_file(tmp_path / "bad.pass", "not-the-passphrase")
    before = files_state(repo)
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(gpt_pc.disk.stat().st_size)
    for args in (("backup", gpt_pc.disk), ("verify",), ("snapshots",), ("restore", "latest", target, "--yes"),
                 ("key", "list"), ("ls", "latest", "2:/")):
        got = lifeboat(*args, "--repo", repo, "--passphrase-file", bad, check=False)
        assert got.returncode == WRONG_PASSPHRASE, (args, got.stderr)
        assert got.stderr.strip() == "lifeboat: wrong passphrase: it opens none of this repository's keys"
        assert "Traceback" not in got.stderr
    assert files_state(repo) == before
    assert target.read_bytes() == bytes(target.stat().st_size)      # the target untouched
    # No passphrase at all, not on a terminal: a usage line, not a hang.
    got = lifeboat("snapshots", "--repo", repo, check=False, stdin=subprocess.DEVNULL)
    assert got.returncode == 2 and "encrypted" in got.stderr and "Traceback" not in got.stderr


def test_keys_add_change_remove_and_the_recovery_code(tmp_path):
    repo, pw, code = init_encrypted(tmp_path)
    pw2 = secret_file(tmp_path / "second.pass", "a second passphrase here")
    pw3 = secret_file(tmp_path / "third.pass", "and the third one, changed")
    added = lifeboat("key", "add", "--repo", repo, "--passphrase-file", pw, "--new-passphrase-file", pw2,
                     *FAST_KDF, "--json", json_out=True).data["added"]
    keys = lifeboat("key", "list", "--repo", repo, "--passphrase-file", pw2, "--json", json_out=True).data["keys"]
    assert len(keys) == 2 and [k["id"] for k in keys if k["in_use"]] == [added]
    assert {k["memory_kib"] for k in keys} == {8 * 1024}
    # change the second passphrase: the third opens, the second no longer does, the first still does
    lifeboat("key", "change", "--repo", repo, "--passphrase-file", pw2, "--new-passphrase-file", pw3, *FAST_KDF)
    assert lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw2, check=False).returncode == WRONG_PASSPHRASE
    lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw3)
    lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw)
    keys = lifeboat("key", "list", "--repo", repo, "--passphrase-file", pw, "--json", json_out=True).data["keys"]
    assert len(keys) == 2 and added not in [k["id"] for k in keys]
    first = next(k["id"] for k in keys if k["in_use"])
    other = next(k["id"] for k in keys if not k["in_use"])
    lifeboat("key", "remove", other, "--repo", repo, "--passphrase-file", pw)
    assert lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw3, check=False).returncode == WRONG_PASSPHRASE
    last = lifeboat("key", "remove", first, "--repo", repo, "--passphrase-file", pw, check=False)
    assert last.returncode == 4 and "only key" in last.stderr

    # The recovery code opens it (typed with spaces and lower case), and gives a new passphrase.
    code_file = secret_file(tmp_path / "code", code.lower().replace("-", " "))
    lifeboat("snapshots", "--repo", repo, "--recovery-code-file", code_file)
    lifeboat("key", "add", "--repo", repo, "--recovery-code-file", code_file, "--new-passphrase-file", pw2, *FAST_KDF)
    lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw2)
    # A mistyped code and another repository's code are refused with the same exit code.
    typo = secret_file(tmp_path / "typo", ("B" if code[0] != "B" else "C") + code[1:])
    got = lifeboat("snapshots", "--repo", repo, "--recovery-code-file", typo, check=False)
    assert got.returncode == WRONG_PASSPHRASE and "not a valid recovery code" in got.stderr
    _, _, other_code = init_encrypted(tmp_path, "other")
    got = lifeboat("snapshots", "--repo", repo, "--recovery-code-file", secret_file(tmp_path / "oc", other_code),
                   check=False)
    assert got.returncode == WRONG_PASSPHRASE and "not this repository's" in got.stderr


def test_the_same_data_gets_other_ids_in_each_encrypted_repository(tmp_path, gpt_pc):
    from recovery.repo.format import blob_id
    from recovery.repo.keys import Unlock
    from recovery.repo.repository import Repository

    ids = []
    for name in ("a", "b"):
        repo, pw, _ = init_encrypted(tmp_path, name)
        lifeboat("backup", gpt_pc.disk, "--repo", repo, "--passphrase-file", pw)
        opened = Repository.open(repo, Unlock(passphrase_file=str(pw)))
        ids.append({bytes(opened.index._entries[i:i + 32]) for i in range(0, len(opened.index._entries), 56)})
        # and each id is the keyed hash of its content, not the plain one
        some = next(iter(ids[-1]))
        raw = opened.read_blob(some)
        assert opened.blob_id(raw) == some != blob_id(raw)
    plain = tmp_path / "plain"
    lifeboat("repo", "init", plain)
    lifeboat("backup", gpt_pc.disk, "--repo", plain)
    opened = Repository.open(plain)
    plain_ids = {bytes(opened.index._entries[i:i + 32]) for i in range(0, len(opened.index._entries), 56)}
    assert len(ids[0]) == len(ids[1]) == len(plain_ids) > 10
    assert not ids[0] & ids[1] and not ids[0] & plain_ids and not ids[1] & plain_ids


def _verify(repo, pw) -> tuple[int, str]:
    got = lifeboat("verify", "--repo", repo, "--passphrase-file", pw, check=False)
    assert "Traceback" not in got.stderr
    return got.returncode, got.stdout + got.stderr


def test_tampering_is_detected_and_named_by_verify(tmp_path, gpt_pc):
    base, pw, _ = init_encrypted(tmp_path, "base")
    lifeboat("backup", gpt_pc.disk, "--repo", base, "--passphrase-file", pw)
    lifeboat("backup", gpt_pc.disk, "--repo", base, "--passphrase-file", pw, "--name", "second")
    assert _verify(base, pw)[0] == 0

    def copy(label: str) -> Path:
        """A copy without parity sidecars: what is checked here is authentication (with its
        parity, a changed byte is repaired: shown just below)."""
        dest = tmp_path / label
        shutil.copytree(base, dest)
        for sidecar in dest.rglob("*.par"):
            sidecar.unlink()
        return dest

    packs = sorted((base / "packs").rglob("*.pack"), key=lambda p: p.name)
    assert len(packs) >= 2

    # with its parity, one changed byte is repaired, and named
    repo = tmp_path / "flip-repaired"
    shutil.copytree(base, repo)
    pack = repo / packs[0].relative_to(base)
    data = bytearray(pack.read_bytes())
    data[100] ^= 1
    pack.write_bytes(bytes(data))
    code, out = _verify(repo, pw)
    assert code == 0 and f"repaired pack {packs[0].stem[:16]}" in out, out

    # one byte changed inside a blob
    repo = copy("flip-blob")
    pack = repo / packs[0].relative_to(base)
    data = bytearray(pack.read_bytes())
    data[100] ^= 1
    pack.write_bytes(bytes(data))
    code, out = _verify(repo, pw)
    assert code == 6 and "damaged or missing" in out
    # the damage mark is sealed, and read back through the key
    listed = lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw, "--json", json_out=True).data
    assert any(s["damaged"] for s in listed["snapshots"])
    for mark in (repo / "damaged").iterdir():
        assert b"partition" not in mark.read_bytes()

    # one byte changed in a footer
    repo = copy("flip-footer")
    pack = repo / packs[0].relative_to(base)
    data = bytearray(pack.read_bytes())
    data[-60] ^= 1
    pack.write_bytes(bytes(data))
    code, out = _verify(repo, pw)
    assert code == 6 and packs[0].name in out

    # two packs swapped
    repo = copy("swap")
    a, b = (repo / p.relative_to(base) for p in packs[:2])
    tmp = a.with_suffix(".x")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    code, out = _verify(repo, pw)
    assert code == 6 and "holds another pack's content" in out

    # one byte changed in an index file
    repo = copy("flip-index")
    index = sorted((repo / "index").iterdir())[0]
    data = bytearray(index.read_bytes())
    data[20] ^= 1
    index.write_bytes(bytes(data))
    code, out = _verify(repo, pw)
    assert code == 6 and index.name in out

    # a manifest copied over another (an old manifest under a newer one's name)
    repo = copy("manifest-name")
    first, second = sorted((repo / "snapshots").iterdir())
    second.write_bytes(first.read_bytes())
    code, out = _verify(repo, pw)
    assert code == 6 and second.name[:8] in out and "manifest" in out

    # one byte changed in a manifest, its name recomputed to match
    repo = copy("manifest-forged")
    first = sorted((repo / "snapshots").iterdir())[0]
    data = bytearray(first.read_bytes())
    data[40] ^= 1
    forged = repo / "snapshots" / f"{blake3.blake3(bytes(data)).hexdigest()}.json"
    forged.write_bytes(bytes(data))
    first.unlink()
    code, out = _verify(repo, pw)
    assert code == 6 and forged.name[:8] in out and "forged or altered" in out


def test_a_reader_of_format_1_refuses_an_encrypted_repository(tmp_path):
    repo, pw, _ = init_encrypted(tmp_path)
    old = tmp_path / "old-lifeboat"
    old.mkdir()
    archive = subprocess.run(["git", "-C", ROOT, "archive", V1_READER, "recovery"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
    got = subprocess.run([sys.executable, "-m", "recovery", "snapshots", "--repo", repo], cwd=old,
                         capture_output=True, text=True)
    assert got.returncode == 5
    assert got.stderr.strip() == (f"lifeboat: {repo} uses repository format 2; this Lifeboat reads format 1 "
                                  "only — use a newer Lifeboat")
    # and this reader refuses an encryption it does not know, the same way
    config = json.loads((repo / "lifeboat-repo.json").read_text())
    config["encryption"]["aead"] = "xchacha20-poly1305"
    (repo / "lifeboat-repo.json").write_text(json.dumps(config))
    got = lifeboat("snapshots", "--repo", repo, "--passphrase-file", pw, check=False)
    assert got.returncode == 5 and "encrypted in a way this Lifeboat does not know" in got.stderr


def test_a_plain_repository_has_no_encryption(tmp_path):
    for extra, version in (([], 2), (["--format", "1"], 1)):
        repo = tmp_path / f"plain{version}"
        lifeboat("repo", "init", repo, *extra)
        config = json.loads((repo / "lifeboat-repo.json").read_text())
        assert config["version"] == version and "encryption" not in config
        assert not (repo / "keys").exists()
    refused = lifeboat("repo", "init", tmp_path / "sealed1", "--format", "1", "--encrypt", check=False)
    assert refused.returncode == 2 and "--encrypt does not go with --format 1" in refused.stderr
    assert not (tmp_path / "sealed1").exists()


def test_the_passphrase_is_never_in_argv_environment_logs_or_json(tmp_path, gpt_pc, monkeypatch):
    pexpect = pytest.importorskip("pexpect")
    repo, pw, code = init_encrypted(tmp_path)
    monkeypatch.setenv("LIFEBOAT_PASSPHRASE_FILE", str(pw))
    outputs = [lifeboat("backup", gpt_pc.disk, "--repo", repo, "--json").stdout,
               lifeboat("verify", "--repo", repo, "--json").stdout,
               lifeboat("key", "list", "--repo", repo, "--json").stdout]
    # asked on a terminal: while it waits for the passphrase, nothing of it is in the
    # process's argv or environment; typed, it is not echoed
    child = pexpect.spawn(sys.executable, ["-m", "recovery", "snapshots", "--repo", str(repo), "--json"],
                          cwd=str(ROOT), env={k: v for k, v in os.environ.items() if k != "LIFEBOAT_PASSPHRASE_FILE"},
                          encoding="utf-8", timeout=60)
    child.expect("Passphrase of the repository: ")
    proc = Path(f"/proc/{child.pid}")
    seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
    assert b"snapshots" in seen
    child.sendline(PASSPHRASE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert PASSPHRASE.encode() not in seen
    assert PASSPHRASE not in child.before
    outputs.append(child.before)
    logs = [p.read_text() for p in (tmp_path / "logs").glob("*.log")]
    assert logs                                         # backup and verify do log
    for text in outputs + logs:
        assert PASSPHRASE not in text
        assert code not in text
    for path in repo.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes()


def test_init_on_a_terminal_asks_twice_and_prints_the_recovery_code_once(tmp_path):
    pexpect = pytest.importorskip("pexpect")

    def init(first: str, second: str):
        child = pexpect.spawn(sys.executable, ["-m", "recovery", "repo", "init", str(tmp_path / "repo"), "--encrypt",
                                               *FAST_KDF], cwd=str(ROOT), encoding="utf-8", timeout=60)
        child.expect("Type the new passphrase: ")
        child.sendline(first)
        child.expect("Type the new passphrase again: ")
        child.sendline(second)
        child.expect(pexpect.EOF)
        child.close()
        return child.exitstatus, child.before

    code, out = init(PASSPHRASE, PASSPHRASE + "x")
    assert code == 2 and "the two passphrases differ" in out and not (tmp_path / "repo").exists()
    code, out = init(PASSPHRASE, PASSPHRASE)
    assert code == 0 and PASSPHRASE not in out
    assert "Recovery code (shown only this once)" in out and "keep it apart from the backups" in out
    recovery = next(line.strip() for line in out.splitlines() if line.strip().count("-") == 13)
    lifeboat("snapshots", "--repo", tmp_path / "repo",
             "--recovery-code-file", secret_file(tmp_path / "code", recovery))
