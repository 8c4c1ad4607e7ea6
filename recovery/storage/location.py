"""Where a repository is: a folder path or a URL, parsed in one place.

    /media/usb/backups                      a folder on this machine
    s3://bucket/prefix                      an S3-compatible object store (--s3-endpoint URL)
    sftp://user@host[:port]/path            an SSH server
    smb://[domain;]user@host/share/path     a Windows share or a NAS (mounted by the kernel)
    nfs://host/export/path                  an NFS export (mounted by the kernel)

A URL never carries a secret: "user:password@" is refused, because whatever is typed on a
command line is visible to every user of the machine (ps, /proc/*/cmdline) and lands in shell
histories. Secrets come from the environment or files (see open_location's backends).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from recovery.errors import UsageError

SCHEMES = ("s3", "sftp", "smb", "nfs")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Location:
    scheme: str                  # "file", "s3", "sftp", "smb", "nfs"
    path: str                    # folder (file), key prefix (s3), remote path (others)
    host: str = ""
    port: int | None = None
    user: str = ""
    domain: str = ""             # smb only
    bucket: str = ""             # s3 only
    share: str = ""              # smb only
    options: dict = field(default_factory=dict, compare=False)   # s3: endpoint, region, path_style, virtual_host

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def display(self) -> str:
        """The location as the user wrote it (it holds no secret), for messages and JSON."""
        if self.scheme == "file":
            return self.path
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}".rstrip("/")
        user = self.user
        if self.scheme == "smb" and self.domain:
            user = f"{self.domain};{user}"
        port = f":{self.port}" if self.port else ""
        at = f"{user}@" if user else ""
        path = f"/{self.share}/{self.path}" if self.scheme == "smb" else self.path
        return f"{self.scheme}://{at}{self.host}{port}{path}".rstrip("/")


def _bad(text: str, why: str) -> UsageError:
    # A password typed into the URL by mistake is not repeated back.
    shown = re.sub(r"^([A-Za-z0-9+.-]+://[^/@:;]*(?:;[^/@:]*)?):[^/@]*@", r"\1:***@", text)
    return UsageError(f"{shown!r} is not a usable repository location: {why}")


def is_url(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text))


def parse(text: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
          s3_path_style: bool | None = None, s3_virtual_host: bool | None = None) -> Location:
    """A Location from what the user typed; UsageError (one line) for a malformed one."""
    text = text.strip()
    if not text:
        raise UsageError("no repository given: name a folder or a location such as s3://bucket/prefix")
    if not is_url(text):
        if text.startswith("file:"):
            raise _bad(text, "write a folder as a plain path")
        return Location("file", text)
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return Location("file", unquote(rest) or "/")
    if scheme not in SCHEMES:
        raise _bad(text, f"Lifeboat knows folders and {', '.join(s + '://' for s in SCHEMES)} locations")
    authority, slash, path = rest.partition("/")
    path = unquote(path)
    if "?" in authority or "#" in authority or "?" in path:
        raise _bad(text, "a location takes no query (?…) or fragment (#…); options have their own flags")
    if scheme == "s3":
        return _parse_s3(text, authority, path, s3_endpoint, s3_region, s3_path_style, s3_virtual_host)
    user, at, hostport = authority.rpartition("@")
    if not at:
        user, hostport = "", authority
    if ":" in user:
        raise _bad(text, "a password never goes in the location (anyone on this machine could read "
                         "it); give it in LIFEBOAT_PASSWORD, a secrets file, or when asked")
    user = unquote(user)
    domain = ""
    if ";" in user:
        if scheme != "smb":
            raise _bad(text, "only smb:// locations take a domain (domain;user@host)")
        domain, user = user.split(";", 1)
        if not domain:
            raise _bad(text, "the domain before ';' is empty")
    host, port = _host_port(text, hostport)
    if scheme in ("sftp", "smb") and not user:
        raise _bad(text, f"say which user to log in as: {scheme}://user@{host}/…")
    if scheme == "nfs" and user:
        raise _bad(text, "NFS has no user name: write nfs://host/export/path")
    if scheme == "sftp":
        return Location("sftp", "/" + path if path else "", host=host, port=port or 22, user=user)
    parts = [p for p in path.split("/") if p]
    if scheme == "smb":
        if not parts:
            raise _bad(text, "name the share: smb://user@host/share/folder")
        if port:
            raise _bad(text, "SMB locations take no port")
        return Location("smb", "/".join(parts[1:]), host=host, user=user, domain=domain, share=parts[0])
    if not parts:
        raise _bad(text, "name the export: nfs://host/export/folder")
    return Location("nfs", "/" + "/".join(parts), host=host, port=port)


def _host_port(text: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):                    # [IPv6 address], maybe with :port
        host, _, tail = hostport.partition("]")
        host += "]"
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise _bad(text, f"{hostport!r} is not a server name or address")
    else:
        host, colon, port_text = hostport.partition(":")
        port_text = port_text if colon else None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _bad(text, "the port must be a number from 1 to 65535")
        port = int(port_text)
    if not host:
        raise _bad(text, "the server's name is missing")
    if not _HOST.match(host):
        raise _bad(text, f"{host!r} is not a server name or address")
    return host, port


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "no", "false")


def _parse_s3(text, bucket, prefix, endpoint, region, path_style, virtual_host) -> Location:
    if "@" in bucket:
        raise _bad(text, "S3 credentials never go in the location: set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, or use a credentials file")
    if not bucket:
        raise _bad(text, "name the bucket: s3://bucket/prefix")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise _bad(text, f"{bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, '.' and '-')")
    endpoint = endpoint or os.environ.get("LIFEBOAT_S3_ENDPOINT") or None
    if endpoint is not None and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise UsageError(f"{endpoint!r} is not a usable S3 endpoint: write it as https://host[:port]")
    if path_style is None:
        path_style = _flag("LIFEBOAT_S3_PATH_STYLE")
    if virtual_host is None:
        virtual_host = _flag("LIFEBOAT_S3_VIRTUAL_HOST")
    if path_style and virtual_host:
        raise UsageError("choose one way to address the bucket: --s3-path-style (URL/bucket/key) or "
                         "--s3-virtual-host (bucket.host/key), not both")
    if virtual_host and endpoint is not None and _is_address(urlsplit(endpoint).hostname or ""):
        raise UsageError(f"--s3-virtual-host puts the bucket in front of the server's name ({bucket}.host), "
                         f"which an address such as {urlsplit(endpoint).hostname} cannot take: give the "
                         "endpoint by name, or use --s3-path-style")
    options = {"endpoint": endpoint.rstrip("/") if endpoint else None,
               "region": region or os.environ.get("LIFEBOAT_S3_REGION") or None,
               "path_style": bool(path_style), "virtual_host": bool(virtual_host)}
    prefix = "/".join(p for p in prefix.split("/") if p)
    return Location("s3", prefix, bucket=bucket, options=options)


S3_DEFAULT_ENDPOINT = "https://s3.amazonaws.com"


def s3_endpoint(loc: Location) -> str:
    """The endpoint URL an s3:// location is reached at (AWS's when none is given)."""
    return loc.options.get("endpoint") or S3_DEFAULT_ENDPOINT


def server_host(loc: Location) -> str:
    """The name or address of the server a network location is reached at."""
    if loc.scheme == "s3":
        return urlsplit(s3_endpoint(loc)).hostname or ""
    return loc.host.strip("[]")


def _on_this_machine(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_location(where, **options):
    """The Storage for a location (text or Location)."""
    loc = where if isinstance(where, Location) else parse(str(where), **options)
    if loc.scheme == "file":
        from recovery.storage.local import LocalStorage

        return LocalStorage(Path(loc.path).absolute())
    from recovery.storage.base import SetupError, StorageError

    try:
        if loc.scheme == "s3":
            from recovery.storage.s3 import S3Storage

            return S3Storage(loc)
        from recovery.storage.mounted import MountedStorage

        return MountedStorage.mount(loc)
    except StorageError as exc:
        # A server not reached because this machine has no network at all: say that (the
        # client's own words would be a name that does not resolve, or an unreachable network).
        host = server_host(loc)
        if not isinstance(exc, SetupError) and not _on_this_machine(host):
            from recovery.network import offline

            why = offline()
            if why:
                raise StorageError(f"cannot reach {host} ({loc.display()}): {why}") from exc
        raise
