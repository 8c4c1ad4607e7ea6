"""An SFTP repository reached with a password (LIFEBOAT_PASSWORD), against a private sshd
that takes passwords only, for an account that exists only in that server's own mount
namespace (tests/netservers.py: PasswordSshd). Backup and restore with every file compared;
the password in no process's arguments, no output and no log; a wrong password is one plain
line, exit 5, and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, assert_restored, build_gpt_pc, lifeboat
from tests.integration.test_repository_safety import one_line_error
from tests.netservers import PASSWORD, PASSWORD_USER, network_mounts


@pytest.fixture
def sftp_pw(password_sshd, monkeypatch, tmp_path):
    for var in ("LIFEBOAT_SSH_KEY", "LIFEBOAT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    for key, value in password_sshd.env(tmp_path / "data").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFEBOAT_LOG_DIR", str(tmp_path / "logs"))
    (tmp_path / "srv").mkdir()
    return password_sshd


def url(server, folder) -> str:
    return f"sftp://{PASSWORD_USER}@127.0.0.1:{server.port}{folder}"


def cmdlines() -> list[str]:
    """Every process's arguments, as any user of the machine can read them."""
    seen = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                seen.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return seen


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_backup_and_restore_with_a_password_which_shows_nowhere(tmp_path, sftp_pw, monkeypatch):
    repo = url(sftp_pw, tmp_path / "srv" / "repo")
    monkeypatch.setenv("LIFEBOAT_PASSWORD", PASSWORD)
    pc = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree"))
    outputs = [lifeboat("repo", "init", repo)]
    # The backup runs while every process's arguments are read, over and over.
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "backup", str(pc.disk), "--repo", repo,
                             "--name", "pc1", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    looks, sshfs_seen = 0, False
    while proc.poll() is None:
        for line in cmdlines():
            assert PASSWORD not in line, line
            sshfs_seen |= line.startswith("sshfs ") and PASSWORD_USER in line
        looks += 1
        time.sleep(0.02)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert sshfs_seen and looks > 5             # the look happened while sshfs served the backup
    outputs.append(subprocess.CompletedProcess(proc.args, 0, out, err))
    outputs.append(lifeboat("verify", "--repo", repo, "--json", json_out=True))
    assert outputs[-1].data["ok"]
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(96 * MiB)
    outputs.append(lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--json"))
    assert_restored(pc, target)
    for done in outputs:
        assert PASSWORD not in done.stdout and PASSWORD not in done.stderr
    logs = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    for log in logs:
        assert PASSWORD.encode() not in log.read_bytes(), log
    assert PASSWORD not in (tmp_path / "data" / "known_hosts").read_text()
    assert not network_mounts(str(tmp_path))


def test_a_wrong_password_is_one_line_and_writes_nothing(tmp_path, sftp_pw, monkeypatch):
    repo = url(sftp_pw, tmp_path / "srv" / "repo")
    monkeypatch.setenv("LIFEBOAT_PASSWORD", "not-" + PASSWORD)
    line = one_line_error(lifeboat("repo", "init", repo, check=False), 5)
    assert f"refused the login of {PASSWORD_USER}" in line, line
    assert "not-" + PASSWORD not in line
    assert list((tmp_path / "srv").iterdir()) == []            # no repository was made
    # An existing repository: a backup with the wrong password adds nothing to it.
    monkeypatch.setenv("LIFEBOAT_PASSWORD", PASSWORD)
    lifeboat("repo", "init", repo)
    before = files_under(tmp_path / "srv" / "repo")
    disk = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree")).disk
    monkeypatch.setenv("LIFEBOAT_PASSWORD", "wrong")
    proc = lifeboat("backup", disk, "--repo", repo, "--json", check=False)
    assert one_line_error(proc, 5).startswith(f"lifeboat: the SSH server 127.0.0.1 refused the login")
    assert '"code": 5' in proc.stdout and "wrong" not in proc.stdout.replace("wrong password", "")
    assert files_under(tmp_path / "srv" / "repo") == before
    assert not network_mounts(str(tmp_path))


def test_a_crash_report_holds_no_secret(tmp_path, sftp_pw, monkeypatch):
    """A backup that ends in an internal error (a bug: here provoked by a program that runs
    Lifeboat's own command line with the backup itself made to raise, once the repository is
    mounted) while the SFTP password and an S3 secret are in its environment: the person's line
    and the log file's traceback (the crash report kept for a bug report) hold neither."""
    repo = url(sftp_pw, tmp_path / "srv" / "repo")
    monkeypatch.setenv("LIFEBOAT_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret-0123456789")
    lifeboat("repo", "init", repo)
    disk = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree")).disk
    buggy = tmp_path / "buggy_lifeboat.py"
    buggy.write_text("import sys\nimport recovery.jobs\nfrom recovery.cli import main\n\n\n"
                     "def bug(*args, **kwargs):\n    raise RuntimeError('a provoked bug')\n\n\n"
                     "recovery.jobs.BackupJob.run = bug\nsys.exit(main())\n")
    proc = subprocess.run([sys.executable, str(buggy), "backup", str(disk), "--repo", repo, "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    assert proc.returncode == 1 and "internal error" in proc.stderr, proc.stderr
    logs = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    crash = [p.read_text() for p in logs if "Traceback" in p.read_text()]
    assert crash, "the internal error left no traceback in the log"
    for text in crash + [proc.stdout, proc.stderr]:
        assert PASSWORD not in text and "s3-secret-0123456789" not in text
    assert not network_mounts(str(tmp_path))
