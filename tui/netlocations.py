"""Network locations of repositories: the secrets each kind needs, given to this process only,
and the locations used before, remembered without any secret.

Secrets go into this process's environment (where the engine's storage backends read them:
recovery/storage/location.py, s3.py, mounted.py) and nowhere else: they die with the process.
The remembered list, ``locations.json`` in the engine's data folder (on the live system, the
stick's data partition), holds each location's text (which never carries a secret: the parser
refuses one), the S3 endpoint when one was given, and when it was last used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

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


def _file() -> Path:
    from recovery.storage.mounted import data_dir

    return data_dir() / FILE_NAME


def load() -> list[Remembered]:
    """The locations used before, the latest first; empty when none (or the file is unreadable:
    it is a convenience, never a reason to stop)."""
    try:
        data = json.loads(_file().read_text())
        entries = data.get("locations", []) if isinstance(data, dict) else []
        return [Remembered(str(e["url"]), str(e.get("endpoint") or ""), str(e.get("last_used") or ""))
                for e in entries if isinstance(e, dict) and scheme_of(str(e.get("url", "")))]
    except (OSError, ValueError, KeyError):
        return []


def remember(url: str, endpoint: str = "") -> None:
    """Put `url` first in the list (written whole, then renamed: a cut leaves the old list)."""
    entry = Remembered(check(url).display(), endpoint.strip() if scheme_of(url) == "s3" else "",
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))
    others = [r for r in load() if r.url != entry.url]
    path = _file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(FILE_NAME + ".tmp")
    tmp.write_text(json.dumps({"locations": [r.__dict__ for r in [entry, *others][:KEEP]]}, indent=2) + "\n")
    os.replace(tmp, path)
