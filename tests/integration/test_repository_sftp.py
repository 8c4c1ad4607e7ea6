"""A repository on an SSH server (sftp://, mounted with sshfs), against a private OpenSSH
sshd on loopback: the round trip with every file compared, the host key shown and accepted
once, a changed host key and a wrong key refused, the server killed mid-backup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, assert_restored, build_gpt_pc, lifeboat
from tests.integration.test_repository_safety import data_tree, one_line_error, one_partition_disk
from tests.netservers import network_mounts


@pytest.fixture
def sftp(sshd, monkeypatch, tmp_path):
    for key, value in sshd.env(tmp_path / "data").items():
        monkeypatch.setenv(key, value)
    (tmp_path / "srv").mkdir()
    return sshd


def url(server, folder) -> str:
    return f"sftp://root@127.0.0.1:{server.port}{folder}"


def blank(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_round_trip_over_sftp_compares_every_file(tmp_path, sftp):
    repo = url(sftp, tmp_path / "srv" / "repo")
    pc = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree"))
    assert "created repository sftp://" in lifeboat("repo", "init", repo).stdout
    out = lifeboat("backup", pc.disk, "--repo", repo, "--name", "pc1", "--json", json_out=True)
    assert (tmp_path / "srv" / "repo" / "snapshots" / f"{out.data['snapshot']}.json").exists()
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    target = blank(tmp_path / "target.img", 96 * MiB)
    plan = lifeboat("restore", "latest", target, "--repo", repo, "--dry-run", "--json", json_out=True).data["plan"]
    assert plan["from"]["location"] == repo          # the place as the person named it, not where it is mounted
    lifeboat("restore", "latest", target, "--repo", repo, "--yes")
    assert_restored(pc, target)
    assert not network_mounts(str(tmp_path))                          # every run unmounted what it mounted


def test_host_key_is_shown_and_accepted_once_and_a_changed_one_refused(tmp_path, sftp, monkeypatch):
    repo = url(sftp, tmp_path / "srv" / "repo")
    monkeypatch.delenv("LIFEBOAT_SSH_HOST_KEY")
    line = one_line_error(lifeboat("repo", "init", repo, check=False), 4)
    assert "not known yet" in line and sftp.fingerprint() in line
    assert not (tmp_path / "srv" / "repo").exists()          # nothing was sent to an unknown server
    # Accepted by the person (unattended: by naming its fingerprint), then remembered.
    monkeypatch.setenv("LIFEBOAT_SSH_HOST_KEY", sftp.fingerprint())
    lifeboat("repo", "init", repo)
    known = (tmp_path / "data" / "known_hosts").read_text()
    assert f"[127.0.0.1]:{sftp.port} ssh-ed25519 " in known
    monkeypatch.delenv("LIFEBOAT_SSH_HOST_KEY")
    lifeboat("snapshots", "--repo", repo)                    # known now: no question
    # The server shows another key: refused, whatever the environment says.
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    assert other.returncode == 0
    blob = (tmp_path / "k.pub").read_text().split()[1]
    (tmp_path / "data" / "known_hosts").write_text(f"[127.0.0.1]:{sftp.port} ssh-ed25519 {blob}\n")
    proc = lifeboat("snapshots", "--repo", repo, check=False)
    assert "different host key" in one_line_error(proc, 4)


@pytest.mark.parametrize("case", ["wrong key", "missing folder", "no server", "dns"])
def test_each_sftp_mistake_is_one_plain_line(tmp_path, sftp, monkeypatch, case):
    repo = url(sftp, tmp_path / "srv" / "repo")
    lifeboat("repo", "init", repo)
    if case == "wrong key":
        monkeypatch.setenv("LIFEBOAT_SSH_KEY", str(sftp.other_key))
        want = "refused the login"
    elif case == "missing folder":
        repo = url(sftp, tmp_path / "nowhere" / "at" / "all")
        want = "does not exist"
    elif case == "no server":
        from tests.netservers import free_ports

        repo = f"sftp://root@127.0.0.1:{free_ports(1)[0]}/x"
        want = "no SSH server answers"
    else:
        repo = "sftp://root@no-such-host.invalid/x"
        want = "does not resolve"
    line = one_line_error(lifeboat("snapshots", "--repo", repo, check=False), 5)
    assert want in line, line
    assert not network_mounts(str(tmp_path))


def test_server_killed_mid_backup_then_back(tmp_path, sftp, monkeypatch):
    repo = url(sftp, tmp_path / "srv" / "repo")
    lifeboat("repo", "init", repo)
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB,
                                                                  data_tree(tmp_path / "st", 4, MiB)), 24 * MiB)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 160 * MiB,
                                                              data_tree(tmp_path / "bt", 120, MiB, seed=5)), 168 * MiB)
    earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]
    packs = lambda: list((tmp_path / "srv" / "repo" / "packs").glob("*/*.pack"))   # noqa: E731
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(8 * MiB))
    monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "6")
    before = len(packs())
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "backup", str(big), "--repo", repo],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(packs()) < before + 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    sftp.kill()
    try:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 5, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "stopped answering" in lines[0], err
    finally:
        sftp.start()
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    again = lifeboat("backup", big, "--repo", repo, "--json", json_out=True).data
    assert again["bytes_stored_new"] < again["bytes_used"] - 15 * MiB      # only what was missing
    target = blank(tmp_path / "t.img", 168 * MiB)
    lifeboat("restore", again["snapshot"], target, "--repo", repo, "--yes")
    assert fi.ext_tree(target, 1 * MiB, 160 * MiB) == fi.ext_tree(tmp_path / "b.img")
    assert not network_mounts(str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a small tmpfs served over SFTP)")
def test_a_full_server_is_one_line_saying_so_and_earlier_snapshots_stay(tmp_path, sftp, monkeypatch):
    """The server's disk fills in the middle of a backup (a 40 MiB tmpfs behind sshd): SFTP
    has no "disk full" answer (OpenSSH says only "failure", which sshfs turns into EPERM), yet
    the person reads that the place is full, exit 7, and the earlier snapshot verifies."""
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB,
                                                                  data_tree(tmp_path / "st", 2, MiB)), 24 * MiB)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 80 * MiB,
                                                              data_tree(tmp_path / "bt", 60, MiB, seed=8)), 88 * MiB)
    store = tmp_path / "srv" / "small"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", store], check=True)
    try:
        repo = url(sftp, store / "repo")
        lifeboat("repo", "init", repo)
        earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]
        lifeboat("backup", small, "--repo", repo, "--name", "big")      # past the up-front estimate
        # A full place is not a server gone away: said at once, not after the retry time.
        monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "60")
        started = time.monotonic()
        line = one_line_error(lifeboat("backup", big, "--repo", repo, "--name", "big", check=False), 7)
        assert "full" in line and "stopped answering" not in line, line
        assert time.monotonic() - started < 60
        assert not (store / "repo" / "lock").exists()
        assert lifeboat("verify", "--repo", repo, earlier, "--json", json_out=True).data["ok"]
        assert not network_mounts(str(tmp_path))
    finally:
        subprocess.run(["umount", store], check=True)


def files_under(folder) -> dict:
    """Every file under `folder` with its size and modification time (what a write changes)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def unprivileged(unprivileged_sshd, monkeypatch, tmp_path):
    for key, value in unprivileged_sshd.env(tmp_path / "data").items():
        monkeypatch.setenv(key, value)
    return unprivileged_sshd


def test_an_account_that_may_not_write_the_folder_is_told_so_for_init_and_backup(tmp_path, unprivileged, monkeypatch):
    """The server lets the account log in but not write the folder (root's, mode 755): repo
    init and a backup into an existing repository are each one line that says so and what to
    fix, exit 5 (the README's "repository"), at once (never retried as a server gone away);
    nothing is written, and the snapshot made before is intact."""
    from tests.netservers import UNPRIVILEGED_USER

    place = unprivileged.place()
    as_user = f"sftp://{UNPRIVILEGED_USER}@127.0.0.1:{unprivileged.port}{place}/repo"
    monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "60")
    want = (f"lifeboat: no permission to write {place}/repo on 127.0.0.1: {UNPRIVILEGED_USER} may log in but "
            f"not write there (permission denied); ask the server's administrator to let {UNPRIVILEGED_USER} "
            f"write that folder, or choose one {UNPRIVILEGED_USER} may write")
    assert one_line_error(lifeboat("repo", "init", as_user, check=False), 5) == want
    assert list(place.iterdir()) == []
    # The same place made a repository by root, with a snapshot in it.
    as_root = f"sftp://root@127.0.0.1:{unprivileged.port}{place}/repo"
    lifeboat("repo", "init", as_root)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "p.img", 16 * MiB,
                                                               data_tree(tmp_path / "t", 2, MiB)), 24 * MiB)
    earlier = lifeboat("backup", disk, "--repo", as_root, "--json", json_out=True).data["snapshot"]
    before = files_under(place / "repo")
    started = time.monotonic()
    assert one_line_error(lifeboat("backup", disk, "--repo", as_user, check=False), 5) == want
    assert time.monotonic() - started < 45
    assert files_under(place / "repo") == before
    # Reading is allowed: the account sees the snapshot, which verifies.
    snaps = lifeboat("snapshots", "--repo", as_user, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]
    assert lifeboat("verify", "--repo", as_user, "--json", json_out=True).data["ok"]
    assert not network_mounts(str(place))


@pytest.mark.parametrize("closed", ["repository", "parent"])
def test_an_account_that_may_not_read_the_folder_is_told_so(tmp_path, unprivileged, closed):
    """The repository's folder (or the folder above it) is root's alone (mode 700): listing
    snapshots, and repo init beside it, are one line saying the account may not read there."""
    from tests.netservers import UNPRIVILEGED_USER

    place = unprivileged.place()
    lifeboat("repo", "init", f"sftp://root@127.0.0.1:{unprivileged.port}{place}/repo")
    (place / "repo" if closed == "repository" else place).chmod(0o700)
    before = files_under(place)
    as_user = f"sftp://{UNPRIVILEGED_USER}@127.0.0.1:{unprivileged.port}{place}/repo"
    line = one_line_error(lifeboat("snapshots", "--repo", as_user, check=False), 5)
    assert line.startswith(f"lifeboat: no permission to read {place}/repo on 127.0.0.1: {UNPRIVILEGED_USER} "
                           "may log in but not read there"), line
    if closed == "parent":
        line = one_line_error(lifeboat("repo", "init", as_user + "2", check=False), 5)
        assert line.startswith(f"lifeboat: no permission to read {place}/repo2 on 127.0.0.1"), line
    assert files_under(place) == before
    assert not network_mounts(str(place))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="needs root and chattr")
def test_root_refused_by_an_immutable_repository_folder_is_told_so(tmp_path, sftp):
    """root, whom mode bits do not stop, logs in, but the server's filesystem refuses to
    change the repository (chattr +i: EPERM on the server, "permission denied" over SFTP):
    the backup is the same one line, exit 5, and the earlier snapshot verifies."""
    folder = tmp_path / "srv" / "repo"
    repo = url(sftp, folder)
    lifeboat("repo", "init", repo)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "p.img", 16 * MiB,
                                                               data_tree(tmp_path / "t", 2, MiB)), 24 * MiB)
    earlier = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data["snapshot"]
    subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)
    try:
        before = files_under(folder)
        line = one_line_error(lifeboat("backup", disk, "--repo", repo, "--name", "again", check=False), 5)
        assert line.startswith(f"lifeboat: no permission to write {folder} on 127.0.0.1: root may log in but "
                               "not write there"), line
        assert files_under(folder) == before
    finally:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    assert not network_mounts(str(tmp_path))


def test_a_place_let_go_of_is_detached_left_alone_and_mounted_afresh(tmp_path, sftp):
    """When a server holds calls for good (the stall watch gave up), the app goes on without
    the place: it is detached at once, its open files are not closed (that would ask the
    server again), and the next use mounts it anew."""
    from recovery.storage import location, mounted

    repo = url(sftp, tmp_path / "srv" / "repo")
    lifeboat("repo", "init", repo)
    loc = location.parse(repo)
    held = mounted.MountedStorage.mount(loc)
    config = held.read("lifeboat-repo.json")
    assert held.read("lifeboat-repo.json", 0, 16) == config[:16]     # a descriptor kept open
    mounted.let_go_all()
    assert not os.path.ismount(held.mountpoint)
    held.close()                                                 # nothing to do, returns at once
    held.unmount()
    again = mounted.MountedStorage.mount(loc)
    try:
        assert again is not held and os.path.ismount(again.mountpoint)
        assert again.read("lifeboat-repo.json") == config
    finally:
        again.unmount()
    assert not os.path.ismount(again.mountpoint)
