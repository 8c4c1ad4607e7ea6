"""Mounting network places with the system's own clients: sshfs (SFTP over OpenSSH), the
kernel's cifs (SMB 2/3) and nfs clients. Secrets reach them through the environment or a
credentials file that only root can read, never through their arguments."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from recovery.errors import RefusedError
from recovery.host import mounts, tools
from recovery.storage.base import StorageError

ASKPASS = "#!/bin/sh\nprintf '%s\\n' \"$LIFEBOAT_SSH_SECRET\"\n"


def _private_file(text: str, suffix: str = "") -> Path:
    fd, name = tempfile.mkstemp(prefix="lifeboat-", suffix=suffix)
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


# -- SSH host keys ---------------------------------------------------------------------
def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def scan_host_keys(host: str, port: int) -> list[str]:
    """The server's public host keys as known_hosts lines ("host type base64")."""
    tools.require("ssh-keyscan", "OpenSSH's client")
    proc = tools.run(["ssh-keyscan", "-T", "10", "-p", str(port), host], check=False, timeout=30)
    lines = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    if not lines:
        said = proc.stderr.lower()
        if "not known" in said or "getaddrinfo" in said or "resolve" in said:
            raise _unresolved(host)
        raise StorageError(f"no SSH server answers at {host} port {port}: check the address, the port "
                           "and that the server is on")
    return lines


def fingerprints(key_lines: list[str]) -> list[str]:
    """'SHA256:… (ED25519)' for each key, as ssh shows them."""
    path = _private_file("\n".join(key_lines) + "\n")
    try:
        out = tools.output(["ssh-keygen", "-l", "-f", str(path)], "reading the host key")
    finally:
        path.unlink()
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found.append(f"{parts[1]} {parts[-1]}")
    return found


def known_keys(known_hosts: Path, host: str, port: int) -> list[str]:
    """The key blobs ("type base64") accepted before for this server."""
    if not known_hosts.exists():
        return []
    proc = tools.run(["ssh-keygen", "-F", host_pattern(host, port), "-f", str(known_hosts)], check=False)
    return [" ".join(line.split()[1:3]) for line in proc.stdout.splitlines()
            if line and not line.startswith("#")]


def remember_keys(known_hosts: Path, host: str, port: int, key_lines: list[str]) -> None:
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    pattern = host_pattern(host, port)
    with open(known_hosts, "a") as f:
        for line in key_lines:
            _, kind, blob = line.split()[:3]
            f.write(f"{pattern} {kind} {blob}\n")


# -- mounting --------------------------------------------------------------------------
def sshfs(user: str, host: str, port: int, path: str, where: Path, known_hosts: Path,
          password: str | None = None, key: str | None = None) -> None:
    """Mount user@host:path at `where` through sshfs, trusting only the keys in known_hosts."""
    tools.require("sshfs", "install sshfs")
    if not mounts.fuse_ready():
        raise StorageError(f"cannot mount {user}@{host}:{path} over SFTP: sshfs needs FUSE, and this "
                           "system has no /dev/fuse (load the fuse module as root)")
    where.mkdir(parents=True, exist_ok=True)
    options = [f"UserKnownHostsFile={known_hosts}", "StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null",
               "ConnectTimeout=10", "ServerAliveInterval=15", "ServerAliveCountMax=3", "reconnect"]
    env = {"LANG": "C"}
    askpass = None
    if key:
        options.append(f"IdentityFile={key}")
    if password is not None:
        askpass = _private_file(ASKPASS, ".sh")
        os.chmod(askpass, stat.S_IRWXU)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY="none",
                   LIFEBOAT_SSH_SECRET=password)
        options.append("NumberOfPasswordPrompts=1")     # the same answer again would be refused again
    else:
        options.append("BatchMode=yes")
    try:
        flags = [arg for option in options for arg in ("-o", option)]   # values may hold commas
        proc = tools.run_daemon(["sshfs", "-p", str(port), f"{user}@{host}:{path}", str(where), *flags],
                                env=env, timeout=60)
        said = proc.stderr
        if proc.returncode != 0 and "no such file" not in said.lower():
            # sshfs hides why ssh gave up ("read: Connection reset by peer"): ask ssh itself,
            # opening the same sftp subsystem with nothing to say.
            ssh_flags = [arg for option in options if "=" in option for arg in ("-o", option)]
            probe = tools.run_daemon(["ssh", "-p", str(port), *ssh_flags, "-s", f"{user}@{host}", "sftp"],
                                     env=env, timeout=60)
            said = probe.stderr + "\n" + said
    finally:
        if askpass is not None:
            askpass.unlink()
    if proc.returncode != 0:
        raise ssh_error(said, user, host, port, path)


def ssh_error(said: str, user: str, host: str, port: int, path: str) -> Exception:
    low = said.lower()
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return RefusedError(f"the SSH server {host} port {port} shows a different host key from the one "
                            "accepted before: someone may be intercepting the connection; if the server "
                            "was reinstalled, remove its line from the known_hosts file and accept the new key")
    if "permission denied" in low:
        return StorageError(f"the SSH server {host} refused the login of {user} (wrong password or key): "
                            "give the password in LIFEBOAT_PASSWORD or when asked, or a key in LIFEBOAT_SSH_KEY")
    if "no such file" in low:
        return StorageError(f"the folder {path or '~'} does not exist on {host}")
    if "could not resolve" in low:
        return _unresolved(host)
    if "connection refused" in low or "timed out" in low or "no route" in low:
        return StorageError(f"no SSH server answers at {host} port {port}: check the address and the network")
    return StorageError(f"cannot reach {user}@{host}:{path} over SFTP: {tools.last_line(said)}")


def _unresolved(host: str) -> StorageError:
    return StorageError(f"the name {host} does not resolve: check the server's name and the network")


def _resolve(host: str) -> str:
    """The server's address; StorageError in plain words when its name does not resolve."""
    import socket

    try:
        return socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        raise _unresolved(host) from None


def cifs(host: str, share: str, where: Path, user: str, domain: str, password: str | None) -> None:
    """Mount //host/share with the kernel's SMB 2/3 client; the password goes in a
    credentials file readable by root alone, removed once mounted."""
    _resolve(host)               # mount.cifs's own words for a name that does not resolve are vague
    where.mkdir(parents=True, exist_ok=True)
    creds = _private_file(f"username={user}\npassword={password or ''}\n" + (f"domain={domain}\n" if domain else ""))
    try:
        proc = tools.run(["mount", "-t", "cifs", f"//{host}/{share}", str(where), "-o",
                          f"credentials={creds},vers=3.0,uid=0,gid=0,file_mode=0600,dir_mode=0700,"
                          "serverino,nobrl,actimeo=1"], check=False, timeout=60)
        if proc.returncode != 0 and "vers" in proc.stderr + proc.stdout:
            proc = tools.run(["mount", "-t", "cifs", f"//{host}/{share}", str(where), "-o",
                              f"credentials={creds},uid=0,gid=0,file_mode=0600,dir_mode=0700,nobrl"],
                             check=False, timeout=60)
    finally:
        creds.unlink()
    if proc.returncode != 0:
        raise cifs_error((proc.stderr or "") + "\n" + (proc.stdout or ""), host, share, user)


# mount.cifs says "mount error(N): <strerror>" and then, always last, "Refer to the
# mount.cifs(8) manual page ...": the number is what tells the causes apart.
_CIFS_UNREACHABLE = {101, 110, 111, 112, 113, 115}     # ENETUNREACH ETIMEDOUT ECONNREFUSED EHOSTDOWN EHOSTUNREACH EINPROGRESS


def cifs_error(said: str, host: str, share: str, user: str) -> StorageError:
    """The one line for a failed SMB mount, from mount.cifs's output."""
    code = None
    found = re.search(r"mount error\((\d+)\)", said)
    if found:
        code = int(found.group(1))
    low = said.lower()
    if code == 13 or "permission denied" in low:
        return StorageError(f"the SMB server {host} refused the login of {user} to the share {share}: "
                            "check the user name, the domain and the password (LIFEBOAT_PASSWORD)")
    if code == 2 or "no such file" in low:
        return StorageError(f"the share {share} does not exist on {host}")
    if code == 19 or "filesystem not supported" in low or "unknown filesystem type" in low:
        return StorageError("this system's kernel has no SMB (cifs) client")
    if "could not resolve" in low:
        return _unresolved(host)
    if code in _CIFS_UNREACHABLE:
        return StorageError(f"no SMB server answers at {host}: check the address, the network and that "
                            "the server is on")
    telling = [line.strip() for line in said.splitlines()
               if line.strip() and not line.strip().startswith("Refer to the mount.cifs")]
    return StorageError(f"cannot mount //{host}/{share}: {telling[-1] if telling else 'mount.cifs gave no reason'}")


def nfs(host: str, export: str, where: Path, port: int | None = None) -> None:
    """Mount host:export with the kernel's NFS client (version 4, else 3)."""
    import shutil

    where.mkdir(parents=True, exist_ok=True)
    addr = _resolve(host)
    # Without nfs-common's mount.nfs helper (the live system has none: it would bring Python
    # and rpcbind), mount(8) -i hands the options to the kernel, which needs the address.
    helper = shutil.which("mount.nfs") is not None
    versions = ("vers=4.2", "vers=4.1", "vers=4.0", "vers=3") if helper else ("vers=4.2", "vers=4.1")
    last = None
    # softerr, not hard: on a hard mount a server that stops answering blocks every call for
    # ever, and the backup hangs without a word. softerr hands ETIMEDOUT back after ~15 s
    # (timeo 5 s, growing, 2 retransmissions), and storage/retry.py then waits its own bounded
    # time for the server, says so in one line, and resumes cleanly: every object is written
    # whole under a temporary name, so a write cut off is simply made again.
    for opts in versions:
        options = opts + f",addr={addr},softerr,timeo=50,retrans=2" + (f",port={port}" if port else "")
        args = ["mount", "-t", "nfs" if helper else "nfs4", *([] if helper else ["-i"])]
        proc = tools.run([*args, f"{addr if ':' not in addr else '[' + addr + ']'}:{export}", str(where),
                          "-o", options], check=False, timeout=90)
        if proc.returncode == 0:
            return
        last = tools.last_line(proc.stderr or proc.stdout)
        if re.search(r"access denied|No such file|does not exist", last or ""):
            break
    if last and ("No such file" in last or "does not exist" in last):
        raise StorageError(f"the export {export} does not exist on {host}")
    if last and "access denied" in last:
        raise StorageError(f"the NFS server {host} refuses this machine access to {export}")
    raise StorageError(f"cannot mount {host}:{export} over NFS: {last}")


def unmount(where: Path, force: bool = False) -> None:
    """Unmount a network place (lazily when busy: the connection may be gone); `force` when
    its server stopped answering, which a plain unmount would wait on."""
    if force:
        force_unmount(where, detach=True)
    elif tools.quiet(["umount", str(where)]) != 0:
        if tools.quiet(["fusermount3", "-u", "-z", str(where)]) != 0:
            tools.quiet(["umount", "-l", str(where)])
    try:
        where.rmdir()
    except OSError:
        pass


MNT_FORCE, MNT_DETACH = 1, 2


def force_unmount(where: Path, detach: bool = False) -> bool:
    """umount2(MNT_FORCE), straight to the kernel: umount(8) would first look at the mount
    point, which on a frozen server can wait for ever itself. For NFS it ends every request
    waiting on the server with EIO; the mount stays while busy unless `detach`. True when the
    mount went away."""
    import ctypes

    # the C library this process already has loaded (find_library would run ldconfig each cut)
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.umount2(os.fsencode(str(where)), MNT_FORCE | (MNT_DETACH if detach else 0)) == 0
