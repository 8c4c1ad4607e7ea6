"""What the UI knows about the machine: disks, places for backups, open repositories.

Everything here calls the engine's public functions and blocks; screens call it from thread
workers. No widget code here, no disk I/O of its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace

from recovery import discover
from recovery.discover import Place
from recovery.errors import LifeboatError
from recovery.model.disk import DiskInfo


def live_system() -> bool:
    return os.environ.get("LIFEBOAT_LIVE") == "1"


@dataclass
class Session:
    """One run of the UI: the disks given on the command line (images or devices), whether
    the machine's own disks are listed too, and the repository given with ``--repo``."""

    repo: str | None = None
    disk_paths: list[str] = field(default_factory=list)
    system_disks: bool = True       # list the machine's disks as well as ``disk_paths``
    scan_partitions: bool = True    # mount partitions read-only to find repositories
    demo: bool = False
    zstd_level: int = field(default_factory=lambda: int(os.environ.get("LIFEBOAT_ZSTD_LEVEL", "3")))
    disks: list[DiskInfo] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    extra_dirs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # disks that could not be read, and why
    usage: dict[str, dict[int, int]] = field(default_factory=dict)   # disk path -> bytes used per partition
    mounts: discover.Mounts = field(default_factory=discover.Mounts)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Passphrases that opened an encrypted repository, by place, in memory for this run only
    # (a backup opens its repository twice: once for the default name, once to write).
    _passphrases: dict[str, str] = field(default_factory=dict, repr=False)

    # -- finding things (blocking: call from a worker) ---------------------------------
    def refresh(self) -> None:
        from recovery.probe import disks as probe

        found: list[DiskInfo] = []
        problems: list[str] = []
        if self.system_disks:
            try:
                found.extend(probe.list_disks())
            except LifeboatError as exc:
                problems.append(f"listing the disks: {exc.message}")
        known = {d.path for d in found}
        for path in self.disk_paths:
            try:
                info = probe.describe(path)
            except LifeboatError as exc:
                problems.append(exc.message)
                continue
            if info.path not in known:
                found.append(info)
                known.add(info.path)
        dirs = ([self.repo] if self.repo else []) + self.extra_dirs
        used: dict[str, dict[int, int]] = {}
        for d in found:
            try:
                used[d.path] = discover.usage(d)
            except (LifeboatError, OSError):
                pass                      # shown without use percentages
        places = discover.scan(found, dirs, mount_partitions=self.scan_partitions)
        holding = discover.disks_holding_repositories(places)
        found = [replace(d, holds_repository=True) if d.path in holding else d for d in found]
        with self._lock:
            self.disks, self.places, self.problems, self.usage = found, places, problems, used

    def add_directory(self, path: str) -> Place:
        place = discover.check_directory(path)
        with self._lock:
            self.extra_dirs.append(place.path or path)
            self.places = [p for p in self.places if p.path != place.path] + [place]
        return place

    def disk(self, path: str) -> DiskInfo | None:
        return next((d for d in self.disks if d.path == path), None)

    def repositories(self) -> list[Place]:
        return [p for p in self.places if p.is_repository]

    def images(self) -> list[Place]:
        """Images other tools made, found on the disks."""
        return [p for p in self.places if p.is_image]

    # -- a repository on the network ------------------------------------------------------
    def check_location(self, text: str, for_backup: bool) -> Place:
        """The network location ``text`` as a Place: opened with the secrets now in the
        environment, its snapshots counted. For a backup, an empty location is a place for a
        new repository; anything else that is not a repository is refused (LifeboatError,
        the engine's own one-line message)."""
        from recovery.errors import RefusedError, RepositoryError
        from recovery.repo.repository import CONFIG_FILE, Repository
        from recovery.storage.location import open_location
        from tui import netlocations

        loc = netlocations.check(text)
        storage = open_location(loc)
        where = loc.display()
        if storage.exists(CONFIG_FILE):
            repo = Repository.open(storage)
            try:
                snaps = repo.snapshots()
            finally:
                repo.close()
            names = tuple(dict.fromkeys(s.name for s in snaps if s.name))
            return Place(None, None, "", where, 0, len(snaps), names=names)
        try:
            if not for_backup:
                raise RepositoryError(f"{where} holds no Lifeboat repository")
            if storage.list(""):
                raise RefusedError(f"{where} holds other files and no Lifeboat repository; choose an empty "
                                   "or new place for a new one")
        finally:
            storage.close()
        return Place(None, None, "", where, 0, None)

    # -- using a place -------------------------------------------------------------------
    def open_repository(self, place: Place, writable: bool = False, passphrase: str | None = None,
                        encryption=None):
        """The repository at ``place``; a new one is made there when ``writable`` and none exists
        (encrypted with ``encryption``, a NewEncryption, when given: its recovery code is in the
        returned repository's ``recovery_code``). An encrypted one is unlocked with ``passphrase``
        (or LIFEBOAT_PASSPHRASE_FILE); without either it raises PassphraseNeeded, and the caller
        asks (never on the terminal behind the screen)."""
        from recovery.repo.keys import Unlock
        from recovery.repo.repository import Repository
        from recovery.storage.location import is_url

        if place.path and is_url(place.path):        # on the network (check_location)
            if place.is_repository:
                return Repository.open(place.path, Unlock(passphrase=passphrase, terminal=False))
            return self._made(place, Repository.init(place.path, encryption=encryption), encryption)
        path = self.mounts.path_of(place, writable=writable)
        if place.is_repository:
            key = place.describe()
            given = passphrase if passphrase is not None else self._passphrases.get(key)
            repo = Repository.open(path, Unlock(passphrase=given, terminal=False))
            if given is not None and repo.encrypted:
                self._passphrases[key] = given
            return repo
        if place.partition is None:
            # A folder the person typed: the engine's rule, worded for the TUI (no --force here).
            from recovery.errors import RefusedError
            from recovery.repo.repository import placement_problem

            problem = placement_problem(path)
            if problem:
                raise RefusedError(f"not creating a repository at {path}: {problem}; choose a folder on a disk")
        # A partition found on a disk (mounted by the scan) is a disk by construction.
        return self._made(place, Repository.init(path, force=True, encryption=encryption), encryption)

    def _made(self, place: Place, repo, encryption):
        """A repository just made: its passphrase is remembered for this run (in memory), so
        opening it again (the backup's check) does not ask."""
        if encryption is not None:
            self._passphrases[place.describe()] = encryption.passphrase
        return repo

    def close(self) -> None:
        self.mounts.close()

    # -- the engine's rules, asked before a person picks a disk ---------------------------------
    def restore_refusal(self, disk: DiskInfo, repo_place: Place | None = None,
                        repo_path: str | None = None) -> str | None:
        """Why ``disk`` cannot be a restore target, or None: the engine's one set of target
        rules (``recovery.restore.target_refusal``, worded to complete "cannot be chosen: ..."),
        plus the disk the chosen repository was found on, which holds backups."""
        from recovery.restore import target_refusal

        if repo_place is not None and repo_place.disk == disk.path:
            return "it holds backups"
        return target_refusal(disk, repo_path, check_mounts=False)


def default_name(disk: DiskInfo, repo=None) -> str:
    """The machine name a backup of ``disk`` is filed under, unless the user types another:
    a name already used in the repository for this disk's serial, else the engine's default
    (model and serial, or the image file's name)."""
    from recovery.backup import default_name as engine_default

    if repo is not None and disk.serial:
        for snap in reversed(repo.snapshots()):
            if snap.disk_serial == disk.serial and snap.name:
                return snap.name
    return engine_default(disk)
