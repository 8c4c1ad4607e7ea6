"""Network locations of repositories: the secrets each kind needs, given to this process only,
and the locations used before, remembered without any secret.

Secrets go into this process's environment (where the engine's storage backends read them:
recovery/storage/location.py, s3.py, mounted.py) and nowhere else: they die with the process.
The remembered list, ``locations.json`` (recovery/remembered.py keeps it: in the engine's data
folder, or on the live system on the stick's data partition), holds each location's text (which never carries a secret: the parser
refuses one), the S3 endpoint when one was given, and when it was last used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

from recovery.storage.location import Location, is_url, parse

FILE_NAME = "locations.json"
KEEP = 10                       # the most recent ones; older ones drop off the list

# The secret fields each scheme asks for: (environment variable, label, masked).
FIELDS: dict[str, list[tuple[str, str, bool]]] = {
    "s3": [("AWS_ACCESS_KEY_ID", "Access key", True), ("AWS_SECRET_ACCESS_KEY", "Secret key", True)],
    "sftp": [("LIFEBOAT_PASSWORD", "Password (empty: use an SSH key)", True)],
    "smb": [("LIFEBOAT_PASSWORD", "Password", True)],
    "nfs": [],
}
EXAMPLES = ("s3://bucket/prefix", "sftp://user@host/path", "smb://[domain;]user@host/share/path",
            "nfs://host/export/path")


def scheme_of(text: str) -> str | None:
    """The scheme of a typed network location ("s3", ...), or None while it is not one."""
    text = text.strip()
    if not is_url(text):
        return None
    scheme = text.split("://", 1)[0].lower()
    return scheme if scheme in FIELDS else None


def apply(scheme: str, secrets: dict[str, str], endpoint: str = "") -> None:
    """Give this process the secrets (and S3 endpoint) for the session: the engine reads them
    from the environment when it opens the location. An empty field removes its variable."""
    for var, _label, _masked in FIELDS.get(scheme, []):
        value = secrets.get(var, "")
        if value:
            os.environ[var] = value
        else:
            os.environ.pop(var, None)
    if scheme == "s3":
        os.environ.pop("LIFEBOAT_S3_VIRTUAL_HOST", None)     # the addressing is chosen here, below
        if endpoint.strip():
            # Object stores at a typed address (MinIO, SeaweedFS, Ceph, a NAS) answer bucket
            # paths, rarely bucket host names, so such an endpoint is used path-style.
            os.environ["LIFEBOAT_S3_ENDPOINT"] = endpoint.strip()
            os.environ["LIFEBOAT_S3_PATH_STYLE"] = "1"
        else:
            os.environ.pop("LIFEBOAT_S3_ENDPOINT", None)
            os.environ.pop("LIFEBOAT_S3_PATH_STYLE", None)


def check(text: str) -> Location:
    """The parsed location (UsageError, one line, for a malformed one or a local folder)."""
    from recovery.errors import UsageError

    loc = parse(text)
    if loc.is_local:
        raise UsageError(f"{text.strip()!r} is a folder, not a network location: write one such as "
                         + " or ".join(EXAMPLES[:2]))
    return loc


@dataclass(frozen=True)
class Remembered:
    url: str
    endpoint: str = ""
    last_used: str = ""          # ISO 8601, UTC

    @property
    def scheme(self) -> str:
        return scheme_of(self.url) or ""

    def when(self) -> str:
        """The last use as people read it: "2026-11-30 19:05"."""
        try:
            return datetime.fromisoformat(self.last_used).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return "?"


def load() -> list[Remembered]:
    """The locations used before, the latest first; empty when none (or the file is unreadable:
    it is a convenience, never a reason to stop). On the live system the stick's copy and one
    kept in RAM (when the stick could not be written) are merged."""
    from recovery.remembered import read_all

    found: dict[str, Remembered] = {}
    for text in read_all(FILE_NAME):
        try:
            data = json.loads(text)
            entries = data.get("locations", []) if isinstance(data, dict) else []
            for e in entries:
                if isinstance(e, dict) and scheme_of(str(e.get("url", ""))):
                    r = Remembered(str(e["url"]), str(e.get("endpoint") or ""), str(e.get("last_used") or ""))
                    if r.url not in found or r.last_used > found[r.url].last_used:
                        found[r.url] = r
        except (ValueError, KeyError, AttributeError):
            continue
    return sorted(found.values(), key=lambda r: r.last_used, reverse=True)[:KEEP]


def remember(url: str, endpoint: str = "") -> str | None:
    """Put `url` first in the list. Returns a note when the list could be kept only until the
    next reboot (on the live system, a stick without a writable data partition)."""
    from recovery.remembered import write

    entry = Remembered(check(url).display(), endpoint.strip() if scheme_of(url) == "s3" else "",
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))
    others = [r for r in load() if r.url != entry.url]
    text = json.dumps({"locations": [r.__dict__ for r in [entry, *others][:KEEP]]}, indent=2) + "\n"
    return write(FILE_NAME, text)
