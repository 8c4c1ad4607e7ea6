"""A repository in S3 object storage, against a real SeaweedFS server on loopback: the round
trip with every file compared, three machines backing up into one bucket at once, a server
killed mid-backup, and each mistake a person makes as one plain line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from recovery.repo.repository import Repository
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, assert_restored, build_gpt_pc, lifeboat
from tests.integration.test_repository_safety import data_tree, one_line_error, one_partition_disk
from tests.integration.test_repository_sharing import backups_at_once, office
from tests.netservers import SECRET_KEY, free_ports
from tests.own_mounts import DROP_COPIED_MOUNTS

pytestmark = pytest.mark.usefixtures("s3env")


@pytest.fixture
def s3env(seaweedfs, monkeypatch, tmp_path):
    for key, value in seaweedfs.env(LIFEBOAT_LOG_DIR=str(tmp_path / "logs")).items():
        monkeypatch.setenv(key, value)
    return seaweedfs


def blank(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_round_trip_through_s3_compares_every_file(tmp_path, s3env):
    s3env.bucket("roundtrip")
    repo = "s3://roundtrip/office/pcs"
    pc = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree"))
    lifeboat("repo", "init", repo)
    out = lifeboat("backup", pc.disk, "--repo", repo, "--name", "pc1", "--json", json_out=True)
    assert out.data["bytes_stored_new"] > 0
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [out.data["snapshot"]]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    target = blank(tmp_path / "target.img", 96 * MiB)
    lifeboat("restore", "latest", target, "--repo", repo, "--yes")
    assert_restored(pc, target)
    # The objects sit under the prefix; nothing in the bucket carries the secret.
    names = [o.object_name for o in s3env.client().list_objects("roundtrip", recursive=True)]
    assert names and all(n.startswith("office/pcs/") for n in names)
    assert "office/pcs/lifeboat-repo.json" in names
    for name in names:
        if not name.endswith(".pack"):
            body = s3env.client().get_object("roundtrip", name).read()
            assert SECRET_KEY.encode() not in body
    # ... nor the output, the log or the process's arguments (checked by construction: the
    # key is only ever in the environment).
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*"))
    assert SECRET_KEY not in logs + out.stdout + out.stderr


def test_three_backups_into_one_bucket_at_once_deduplicate(tmp_path, s3env):
    s3env.bucket("office")
    repo = "s3://office/all"
    lifeboat("repo", "init", repo)
    disks = office(tmp_path, shared_mib=24)
    results, _ = backups_at_once(disks, repo)
    stored = sum(r["bytes_stored_new"] for r in results)
    assert sum(r["bytes_used"] for r in results) > 3 * 26 * MiB
    assert stored < 2 * 24 * MiB, stored       # what they share is not stored three times, nor twice
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert sorted(s["name"] for s in snaps) == ["pc0", "pc1", "pc2"]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    objs = [o.object_name for o in s3env.client().list_objects("office", prefix="all/lock", recursive=True)]
    assert objs == []                                  # every shared lock was released
    for i in (0, 2):
        target = blank(tmp_path / f"t{i}.img", 52 * MiB)
        lifeboat("restore", "latest", target, "--repo", repo, "--name", f"pc{i}", "--yes")
        part = Repository.open(repo)
        start = part.load_manifest(part.resolve("latest", name=f"pc{i}")).partitions[0].start
        assert fi.ext_tree(target, start, 44 * MiB) == fi.ext_tree(tmp_path / f"p{i}.img")


def test_server_killed_mid_backup_then_back(tmp_path, s3env, monkeypatch):
    """Killed for good: retries for LIFEBOAT_RETRY_SECONDS, then one line; the earlier
    snapshot intact; the rerun sends only what is missing. Killed and restarted within the
    retry time: the backup simply finishes."""
    s3env.bucket("faults")
    repo = "s3://faults/r"
    lifeboat("repo", "init", repo)
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB,
                                                                  data_tree(tmp_path / "st", 4, MiB)), 24 * MiB)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 160 * MiB,
                                                              data_tree(tmp_path / "bt", 120, MiB, seed=5)), 168 * MiB)
    earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]

    def packs():
        return [o for o in s3env.client().list_objects("faults", prefix="r/packs/", recursive=True)
                if o.object_name.endswith(".pack")]            # not their parity sidecars

    env_pack = {"LIFEBOAT_PACK_SIZE": str(8 * MiB), "LIFEBOAT_RETRY_SECONDS": "6"}
    for k, v in env_pack.items():
        monkeypatch.setenv(k, v)
    before = len(packs())
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "backup", str(big), "--repo", repo],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(packs()) < before + 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    s3env.kill()
    started = time.monotonic()
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - started
    try:
        assert proc.returncode == 5, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "stopped answering" in lines[0], err
        assert "Traceback" not in err
        assert waited >= 4                                 # it did keep trying
    finally:
        s3env.start()
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]           # the half-made snapshot is invisible
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    sent_before = sum(o.size for o in packs())

    # Killed again, but back within the retry time: the same run finishes.
    monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "120")
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "backup", str(big), "--repo", repo, "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    n = len(packs())
    while len(packs()) < n + 2 and proc.poll() is None:
        time.sleep(0.05)
    s3env.kill()
    time.sleep(2)
    s3env.start()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    again = json.loads(out)
    # What the killed run had stored was not sent again.
    assert again["bytes_stored_new"] < again["bytes_used"] - 15 * MiB
    assert sum(o.size for o in packs()) - sent_before < again["bytes_used"] - 15 * MiB
    target = blank(tmp_path / "t.img", 168 * MiB)
    lifeboat("restore", again["snapshot"], target, "--repo", repo, "--yes")
    assert fi.ext_tree(target, 1 * MiB, 160 * MiB) == fi.ext_tree(tmp_path / "b.img")


@pytest.mark.parametrize("case", ["wrong secret", "missing bucket", "dns", "refused", "not a repository",
                                  "password in url", "bad bucket name", "bad endpoint"])
def test_each_mistake_is_one_plain_line(tmp_path, s3env, monkeypatch, case):
    s3env.bucket("mistakes")
    repo = "s3://mistakes/r"
    if not initialised("mistakes", s3env):
        lifeboat("repo", "init", repo)
    args = ["snapshots", "--repo", repo]
    want = {"wrong secret": "refused the credentials", "missing bucket": "does not exist",
            "dns": "does not resolve", "refused": "connection refused",
            "not a repository": "not a Lifeboat repository", "password in url": "never goes in the location",
            "bad bucket name": "not a valid bucket name", "bad endpoint": "not a usable S3 endpoint"}[case]
    if case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    elif case == "missing bucket":
        args[2] = "s3://no-such-bucket/r"
    elif case == "dns":
        args += ["--s3-endpoint", "http://no-such-host.invalid:9000"]
    elif case == "refused":
        args += ["--s3-endpoint", f"http://127.0.0.1:{free_ports(1)[0]}"]
    elif case == "not a repository":
        args[2] = "s3://mistakes/elsewhere"
    elif case == "password in url":
        args[2] = "sftp://me:hunter2@server/backups"
    elif case == "bad bucket name":
        args[2] = "s3://No_Such/r"
    elif case == "bad endpoint":
        args += ["--s3-endpoint", "ftp://x"]
    # A malformed location is a usage error (2); a store that cannot be used is a repository error (5).
    code = 2 if case in ("password in url", "bad bucket name", "bad endpoint") else 5
    started = time.monotonic()
    line = one_line_error(lifeboat(*args, check=False), code)
    assert want in line, line
    assert time.monotonic() - started < 30            # a mistake is not retried for minutes
    assert SECRET_KEY not in line and "hunter2" not in line      # a secret is never repeated


def initialised(bucket, server) -> bool:
    return any(True for _ in server.client().list_objects(bucket, prefix="r/lifeboat-repo.json"))



def test_server_killed_mid_restore_leaves_an_incomplete_restore_that_resumes(tmp_path, s3env, monkeypatch):
    """The server goes away while the disk is being written: retried for
    LIFEBOAT_RETRY_SECONDS, then one line, and the target carries the incomplete-restore mark
    (never a disk that looks fine). With the server back, the same restore finishes it."""
    from recovery.probe.restore_mark import read_mark

    s3env.bucket("restorefaults")
    repo = "s3://restorefaults/r"
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(4 * MiB))
    lifeboat("repo", "init", repo)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 200 * MiB,
                                                              data_tree(tmp_path / "bt", 160, MiB, seed=7)), 208 * MiB)
    snapshot = lifeboat("backup", big, "--repo", repo, "--json", json_out=True).data["snapshot"]
    target = blank(tmp_path / "t.img", 208 * MiB)
    monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "4")
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "restore", snapshot, str(target), "--repo", repo,
                             "--layout", "keep", "--yes"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while read_mark(str(target)) is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None and read_mark(str(target)) is not None, "the restore did not start writing"
    s3env.kill()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        s3env.start()
    assert proc.returncode == 5, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "stopped answering" in lines[0] and "incomplete" in lines[0], lines[0]
    mark = read_mark(str(target))
    assert mark is not None and mark.snapshot == snapshot      # the disk says what it is
    lifeboat("restore", snapshot, target, "--repo", repo, "--layout", "keep", "--yes")
    assert read_mark(str(target)) is None
    assert fi.ext_tree(target, 1 * MiB, 200 * MiB) == fi.ext_tree(tmp_path / "b.img")


def test_two_deleting_operations_racing_for_the_lock_in_s3_never_both_hold_it(tmp_path, s3env):
    """An object store has no create-if-absent: two processes that both find no lock both
    write one. Each reads the lock back (and again after a pause, for whatever was in
    flight): exactly one holds it, the other says the repository is busy."""
    import threading

    from recovery.errors import RepositoryError
    from recovery.repo.lock import Lock

    s3env.bucket("lockrace")
    lifeboat("repo", "init", "s3://lockrace/r")
    for _ in range(4):
        repos = [Repository.open("s3://lockrace/r") for _ in range(2)]
        locks = [Lock(r.storage, exclusive=True) for r in repos]
        start = threading.Barrier(2)
        outcome: list[str] = []

        def take(lock):
            start.wait()
            try:
                lock.acquire()
                outcome.append("held")
            except RepositoryError as exc:
                outcome.append(exc.message)

        threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcome.count("held") == 1, outcome
        assert "the repository is busy" in next(o for o in outcome if o != "held")
        holder = next(lock for lock in locks if lock.held)
        holder.release()
        for r in repos:
            r.close()
    names = [o.object_name for o in s3env.client().list_objects("lockrace", prefix="r/lock", recursive=True)]
    assert names == []                  # released, and the loser never removed the winner's lock


def test_credentials_from_a_credentials_file_and_its_profile(tmp_path, s3env, monkeypatch):
    """No key in the environment: the credentials file (AWS_SHARED_CREDENTIALS_FILE) opens the
    bucket, with the profile AWS_PROFILE names; a profile the file lacks, or no credentials at
    all, is one line naming what to set. The keys appear in no output."""
    from tests.netservers import ACCESS_KEY

    s3env.bucket("credfile")
    repo = "s3://credfile/r"
    lifeboat("repo", "init", repo)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
                     f"[office]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    creds.chmod(0o600)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "office")
    out = lifeboat("snapshots", "--repo", repo, "--json", json_out=True)
    assert out.data["snapshots"] == []
    assert SECRET_KEY not in out.stdout + out.stderr
    # The default profile holds a wrong key: the server's refusal, in one line.
    monkeypatch.delenv("AWS_PROFILE")
    line = one_line_error(lifeboat("snapshots", "--repo", repo, check=False), 5)
    assert "refused the credentials" in line, line
    monkeypatch.setenv("AWS_PROFILE", "home")
    line = one_line_error(lifeboat("snapshots", "--repo", repo, check=False), 5)
    assert "holds no key for profile home" in line, line
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))                  # no ~/.aws/credentials either
    line = one_line_error(lifeboat("snapshots", "--repo", repo, check=False), 5)
    assert "no S3 credentials" in line and "AWS_ACCESS_KEY_ID" in line, line


def test_a_region_given_is_the_one_requests_are_signed_for(tmp_path, s3env, monkeypatch):
    """--s3-region (or LIFEBOAT_S3_REGION) is used, not guessed: the server sees requests
    signed for that region (SeaweedFS accepts any), and the repository works through it."""
    s3env.bucket("regional")
    repo = "s3://regional/r"
    lifeboat("repo", "init", repo, "--s3-region", "eu-central-1")
    out = lifeboat("snapshots", "--repo", repo, "--s3-region", "eu-central-1", "--json", json_out=True)
    assert out.data["snapshots"] == []
    from recovery.storage.location import parse
    from recovery.storage.s3 import S3Storage

    monkeypatch.setenv("LIFEBOAT_S3_REGION", "eu-central-1")
    storage = S3Storage(parse(repo))
    try:
        assert storage.client._get_region("regional") == "eu-central-1"   # noqa: SLF001 - what signs
        assert storage.exists("lifeboat-repo.json")
    finally:
        storage.close()


@pytest.mark.parametrize("code", ["QuotaExceeded", "XMinioStorageFull"])
def test_a_bucket_over_its_quota_is_said_at_once_and_earlier_snapshots_stay(tmp_path, s3env, monkeypatch, code):
    """The store refuses a PUT for want of room (Ceph RGW's QuotaExceeded, HTTP 403; MinIO's
    XMinioStorageFull, HTTP 507) part way through a backup: one line saying the bucket is full,
    exit 7, at once (never taken for a server gone away and retried, nor for refused
    credentials); the earlier snapshot verifies, and nothing names the half-made one."""
    from tests.s3quota import QuotaProxy

    s3env.bucket(f"quota-{code.lower()}")
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB,
                                                                  data_tree(tmp_path / "st", 3, MiB)), 24 * MiB)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 64 * MiB,
                                                              data_tree(tmp_path / "bt", 48, MiB, seed=9)), 72 * MiB)
    with QuotaProxy(s3env.port, budget=24 * MiB, code=code) as quota:
        monkeypatch.setenv("LIFEBOAT_S3_ENDPOINT", quota.endpoint)
        monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "120")
        monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(8 * MiB))
        repo = f"s3://quota-{code.lower()}/r"
        lifeboat("repo", "init", repo)
        earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]
        started = time.monotonic()
        line = one_line_error(lifeboat("backup", big, "--repo", repo, check=False), 7)
        assert f"the S3 bucket 'quota-{code.lower()}' is full ({code})" in line, line
        assert time.monotonic() - started < 100 and quota.refused >= 1
        snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
        assert [s["id"] for s in snaps] == [earlier]
        assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]


def test_a_key_without_the_right_to_write_is_one_line_and_writes_nothing(tmp_path, s3env, monkeypatch):
    """A key the store knows but that may only read (SeaweedFS identity with Read and List):
    listing snapshots works, a backup is one line naming the key's rights, exit 5, at once,
    and the bucket holds nothing more."""
    from tests.netservers import READER_KEY, READER_SECRET

    s3env.bucket("readonly")
    repo = "s3://readonly/r"
    lifeboat("repo", "init", repo)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "p.img", 16 * MiB,
                                                               data_tree(tmp_path / "t", 2, MiB)), 24 * MiB)
    before = sorted(o.object_name for o in s3env.client().list_objects("readonly", recursive=True))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    assert lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"] == []
    started = time.monotonic()
    line = one_line_error(lifeboat("backup", disk, "--repo", repo, check=False), 5)
    assert "refused" in line and "that this key may use the bucket 'readonly'" in line, line
    assert READER_SECRET not in line
    assert time.monotonic() - started < 30
    assert sorted(o.object_name for o in s3env.client().list_objects("readonly", recursive=True)) == before


def test_a_store_that_takes_no_object_as_large_as_a_pack_says_so_and_what_to_set(tmp_path, s3env, monkeypatch):
    """A store whose largest object is smaller than a pack (answers EntityTooLarge, HTTP 400,
    as AWS, MinIO and Ceph RGW do): not "full" (exit 7) but one line that names the knob,
    LIFEBOAT_PACK_SIZE, exit 5, at once; the earlier snapshot stays; and following the advice
    (smaller packs) the same backup goes through the same store."""
    from tests.s3quota import QuotaProxy

    s3env.bucket("toolarge")
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB,
                                                                  data_tree(tmp_path / "st", 3, MiB)), 24 * MiB)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 48 * MiB,
                                                              data_tree(tmp_path / "bt", 32, MiB, seed=4)), 56 * MiB)
    with QuotaProxy(s3env.port, max_object=12 * MiB) as store:
        monkeypatch.setenv("LIFEBOAT_S3_ENDPOINT", store.endpoint)
        monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "120")
        repo = "s3://toolarge/r"
        lifeboat("repo", "init", repo)
        earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]
        started = time.monotonic()
        monkeypatch.delenv("LIFEBOAT_PACK_SIZE")       # the suite's small packs: back to the product's
        line = one_line_error(lifeboat("backup", big, "--repo", repo, check=False), 5)
        assert line.startswith(f"lifeboat: the S3 server {store.endpoint} refuses an object of "), line
        assert ("(EntityTooLarge): set LIFEBOAT_PACK_SIZE (bytes, now 67108864) below the store's largest "
                "object size, or raise that limit on the store; every earlier snapshot is intact") in line, line
        assert "full" not in line
        assert time.monotonic() - started < 100 and store.refused >= 1
        assert [s["id"] for s in lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]] == [earlier]
        # A size that is not a number of bytes is a usage mistake, said before anything is sent.
        monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "8M")
        puts = store.put_bytes
        line = one_line_error(lifeboat("backup", big, "--repo", repo, check=False), 2)
        assert "LIFEBOAT_PACK_SIZE='8M' is not a size: give it in bytes" in line, line
        # As the line says: smaller packs, and the store takes them.
        monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(8 * MiB))
        refused = store.refused
        after = lifeboat("backup", big, "--repo", repo, "--json", json_out=True).data["snapshot"]
        assert store.refused == refused and store.put_bytes > puts + 30 * MiB
        snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
        assert sorted(s["id"] for s in snaps) == sorted([earlier, after])
        assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]


def lifeboat_resolving(hosts: dict[str, str], *args, check=True, json_out=False) -> subprocess.CompletedProcess:
    """The real CLI in a mount namespace of its own where /etc/hosts (a temporary copy bind-
    mounted over it, never the host's own) also names `hosts`; the network is the host's."""
    import tempfile

    table = tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False)
    with table:
        table.write(open("/etc/hosts").read() + "".join(f"{ip} {name}\n" for name, ip in hosts.items()))
    program = [os.environ["LIFEBOAT_CLI"]] if os.environ.get("LIFEBOAT_CLI") else [sys.executable, "-m", "recovery"]
    script = DROP_COPIED_MOUNTS + f'mount --bind {shlex.quote(table.name)} /etc/hosts && exec {shlex.join(program)} "$@"'
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "lifeboat",
                               *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    finally:
        os.unlink(table.name)
    if check and proc.returncode != 0:
        raise AssertionError(f"lifeboat {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stderr}")
    if json_out:
        proc.data = json.loads(proc.stdout)
    return proc


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a mount namespace of its own)")
def test_virtual_host_addressing_backs_up_verifies_and_restores(tmp_path, s3env, monkeypatch):
    """--s3-virtual-host: every request goes to BUCKET.ENDPOINT-HOST/key, AWS's own way, here
    at a self-hosted endpoint (SeaweedFS with -s3.domainName; the names resolve only inside
    the CLI's private mount namespace). A logging proxy sees each request's Host header: all
    are the bucket's host name, none a path-style /bucket/... request."""
    import socket

    from tests.netservers import S3_DOMAIN
    from tests.s3quota import QuotaProxy

    s3env.bucket("vhost")
    bucket_host = f"vhost.{S3_DOMAIN}"
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(bucket_host, 80)              # this machine's own /etc/hosts is untouched
    pc = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree"))
    target = blank(tmp_path / "target.img", 96 * MiB)
    with QuotaProxy(s3env.port) as proxy:
        monkeypatch.setenv("LIFEBOAT_S3_ENDPOINT", f"http://{S3_DOMAIN}:{proxy.port}")
        monkeypatch.setenv("LIFEBOAT_S3_REGION", "us-east-1")   # else minio asks the bucket's location, path-style
        monkeypatch.delenv("LIFEBOAT_S3_PATH_STYLE")
        names = {S3_DOMAIN: "127.0.0.1", bucket_host: "127.0.0.1"}
        repo = ["--repo", "s3://vhost/pcs", "--s3-virtual-host"]
        lifeboat_resolving(names, "repo", "init", "s3://vhost/pcs", "--s3-virtual-host")
        out = lifeboat_resolving(names, "backup", pc.disk, *repo, "--json", json_out=True).data
        assert lifeboat_resolving(names, "verify", *repo, "--json", json_out=True).data["ok"]
        lifeboat_resolving(names, "restore", "latest", target, *repo, "--yes")
    assert_restored(pc, target)
    hosts = {host for _, host, _, _ in proxy.seen}
    assert hosts == {f"{bucket_host}:{proxy.port}"}, hosts
    assert not any(path.startswith("/vhost") for _, _, path, _ in proxy.seen)
    assert sum(method == "PUT" for method, _, _, _ in proxy.seen) >= 3
    stored = [o.object_name for o in s3env.client().list_objects("vhost", recursive=True)]
    assert f"pcs/snapshots/{out['snapshot']}.json" in stored, stored


@pytest.mark.parametrize("flags, said", [
    (["--s3-endpoint", "http://127.0.0.1:9000", "--s3-virtual-host"], "an address such as 127.0.0.1 cannot take"),
    (["--s3-endpoint", "http://minio.lan:9000", "--s3-virtual-host", "--s3-path-style"], "not both"),
])
def test_virtual_host_addressing_that_cannot_work_is_a_usage_line(s3env, flags, said):
    line = one_line_error(lifeboat("snapshots", "--repo", "s3://b12/p", *flags, check=False), 2)
    assert said in line, line
