"""Opening, creating and reading a repository; the write session used by backup."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import blake3
import zstandard

from recovery.errors import BusyError, DamageError, LifeboatError, RefusedError, RepositoryError, UsageError
from recovery.repo.format import (
    CODEC_RAW,
    CODEC_ZSTD,
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    KIND_META,
    READABLE_VERSIONS,
    blob_id,
)
from recovery.repo.cache import IndexCache
from recovery.repo.index import Index, encode_index_file, unindexed_packs, write_index_file
from recovery.repo.keys import KdfParams, PendingKey, Unlock, key_name, new_key_object, recovery_code
from recovery.repo.lock import Lock
from recovery.repo.manifest import MANIFEST_FORMAT, MANIFEST_VERSION, Manifest
from recovery.repo.packs import PackBuffers, PackWriter, WrittenPack, pack_name, read_footer
from recovery.repo.sealing import (AAD_MANIFEST, AAD_MARK, AEAD_NAME, ID_NAME, MASTER_KEY_SIZE, SealBroken, Sealer,
                                   key_check)
from recovery.stages import StageClock
from recovery.repo.parity import parity_name, repair_object, write_protected
from recovery.storage.base import Storage, StorageError, UnreachableError
from recovery.storage.local import LocalStorage, placement_problem  # noqa: F401 - the TUI asks it here
from recovery.units import env_seconds
from recovery.workers import worker_count

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1024 * 1024
DEFAULT_PACK_SIZE = 64 * 1024 * 1024


def pack_size() -> int:
    """Bytes a pack is closed at: LIFEBOAT_PACK_SIZE (smaller packs for a store that takes only
    smaller objects), else DEFAULT_PACK_SIZE."""
    text = os.environ.get("LIFEBOAT_PACK_SIZE", "").strip()
    if not text:
        return DEFAULT_PACK_SIZE
    if not text.isdigit() or int(text) == 0:
        raise UsageError(f"LIFEBOAT_PACK_SIZE={text!r} is not a size: give it in bytes, such as 16777216 for 16 MiB")
    return int(text)

# Packs written by backups that have not made their snapshot yet, one pack id a line
# (informative: a backup that resumes counts what it finds there as resumed, not deduplicated).
# Each backup keeps its own list, rewritten whole (object stores cannot append); older
# Lifeboat appended to the one file UNFINISHED_FILE, still read.
UNFINISHED_FILE = "unfinished-packs"
UNFINISHED_PREFIX = "unfinished/"
SUBDIRS = ("packs", "index", "snapshots", "verified", "tmp")
KEYS_DIR = "keys"           # an encrypted repository's key objects
# An encrypted repository is format 2: a reader of format 1 refuses it by the version alone.
ENCRYPTED_VERSION = 2


@dataclass
class NewEncryption:
    """What `Repository.init` needs to make an encrypted repository."""

    passphrase: str
    kdf: KdfParams = field(default_factory=KdfParams)


# What a v2 repository's config says of its parity (docs/FORMAT.md, "Parity (format v2)").
PARITY_CONFIG = {"scheme": "sector-rs", "code": "isa-l-cauchy", "sidecar": ".par"}


@dataclass
class SnapshotInfo:
    id: str
    short_id: str
    name: str
    created: str
    disk_size: int
    disk_model: str | None
    disk_serial: str | None
    bytes_used: int
    bytes_stored_new: int
    partitions: list[dict] = field(default_factory=list)
    verified: str | None = None
    damaged: list[str] | None = None    # what the last verify found damaged; None when nothing

    def to_json(self) -> dict:
        return dict(self.__dict__)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Compressor:
    """zstd at one level for the backup's workers, on at most `threads` threads at once: more
    workers than cores keep reads in flight, but compressing on more threads than cores only
    makes the contexts evict each other's tables from the caches (measured: ~12% more zstd
    CPU time with one context per worker). Each context is reused, warm, for the next chunk."""

    def __init__(self, level: int, threads: int | None = None):
        highest = zstandard.MAX_COMPRESSION_LEVEL
        if level > highest:
            raise UsageError(f"zstd level {level} is out of range: the highest is {highest}")
        # The queue holds the contexts not in use, each with when it was put back (None before
        # its first use): taking one waits while all are busy.
        self._idle: queue.SimpleQueue[tuple[zstandard.ZstdCompressor, float | None]] = queue.SimpleQueue()
        for _ in range(worker_count(cores=threads)):
            self._idle.put((zstandard.ZstdCompressor(level=level), None))
        # Seconds contexts sat unused between two chunks, summed: a core left without a
        # window to compress (reads not keeping up), for the backup's profile.
        self.starved_s = 0.0
        self._lock = threading.Lock()

    def compress(self, raw) -> tuple[bytes, int]:
        """The stored form and its codec: raw bytes when compression does not pay (< 1/64 saved)."""
        cctx, since = self._idle.get()
        if since is not None:
            waited = time.perf_counter() - since
            with self._lock:
                self.starved_s += waited
        try:
            packed = cctx.compress(raw)
        finally:
            self._idle.put((cctx, time.perf_counter()))
        if len(packed) >= len(raw) - len(raw) // 64:
            return bytes(raw), CODEC_RAW
        return packed, CODEC_ZSTD


def _place(where) -> tuple[Storage, object]:
    """The storage of a repository given as a folder path, a location (URL) or a Storage,
    and what `Repository.path` holds for it: the folder's Path, or the location as text."""
    if isinstance(where, Storage):
        return where, where.local_root or where.describe()
    from recovery.storage.location import open_location

    storage = open_location(str(where))
    return storage, storage.local_root or storage.describe()


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 4096 or chunk_size & (chunk_size - 1) or chunk_size > 64 * 1024 * 1024:
        raise RepositoryError("chunk size must be a power of two between 4 KiB and 64 MiB")


def _new_config(chunk_size: int, version: int = FORMAT_VERSION, master: bytes | None = None) -> dict:
    if version not in READABLE_VERSIONS:
        raise UsageError(f"repository format {version} is not one this Lifeboat writes")
    config = {
        "format": FORMAT_NAME,
        "version": version,
        "id": uuid.uuid4().hex,
        "created": now_iso(),
        "chunk_size": chunk_size,
        "hash": "blake3-256",
        "compression": "zstd",
        "parity": dict(PARITY_CONFIG),
    }
    if version < 2:
        del config["parity"]
    if master is not None:
        config["version"] = ENCRYPTED_VERSION
        config["encryption"] = {"aead": AEAD_NAME, "ids": ID_NAME, "kdf": "argon2id",
                                "key_check": key_check(master)}
    return config


def _new_keys(config: dict, master: bytes | None, encryption: "NewEncryption | None") -> list[tuple[str, bytes]]:
    """The key object an encrypted repository starts with, as (object name, bytes)."""
    if master is None or encryption is None:
        return []
    key_id, body = new_key_object(master, encryption.passphrase, config["id"], encryption.kdf, config["created"])
    return [(key_name(key_id), body)]


def _check_config(config, where) -> None:
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise RepositoryError(f"{where} is not a Lifeboat repository")
    if config.get("version") not in READABLE_VERSIONS:
        raise RepositoryError(
            f"{where} uses repository format {config.get('version')}; this Lifeboat reads "
            f"formats {', '.join(map(str, READABLE_VERSIONS))} only — use a newer Lifeboat"
        )
    enc = config.get("encryption")
    if enc is not None and (not isinstance(enc, dict) or enc.get("aead") != AEAD_NAME or enc.get("ids") != ID_NAME
                            or enc.get("kdf") != "argon2id" or config.get("version") < ENCRYPTED_VERSION):
        raise RepositoryError(f"{where} is encrypted in a way this Lifeboat does not know — use a newer Lifeboat")


class Repository:
    def __init__(self, path, config: dict, storage: Storage | None = None, sealer: Sealer | None = None,
                 key_id: str | None = None):
        # `path`: the folder on this machine (a Path) or, for a network repository, its
        # location without secrets (text). Everything reads and writes through `storage`.
        self.path = path
        self.storage = storage if storage is not None else LocalStorage(Path(path))
        self.config = config
        self.chunk_size: int = config["chunk_size"]
        self._index: Index | None = None
        # Network repositories keep copies of what never changes on this machine.
        self.index_cache = IndexCache.for_repository(config.get("id", "")) if self.storage.remote else None
        self._dctx = threading.local()
        # The one pack last repaired in memory from its parity, for the blobs read next.
        self._repaired: tuple[str, bytes] | None = None
        self._repair_lock = threading.Lock()
        self.repaired_in_memory: set[str] = set()   # object names read through repair
        # An encrypted repository's keys once unlocked (None: a plain repository), and the key
        # object that unlocked it (None when a recovery code did).
        self._sealer = sealer
        self.key_id = key_id
        self._pending: PendingKey | None = None    # an unlock still deriving its key
        self._pending_lock = threading.Lock()
        self.recovery_code: str | None = None    # set once, by init of an encrypted repository
        # Wall seconds the unlock took (the passphrase's Argon2id): a fixed price per command,
        # reported apart from the data path's time.
        self.unlock_seconds = 0.0
        self.unlock_wait_seconds = 0.0            # of those, what the command waited for (the rest overlapped)
        self.unlocked: str | None = None          # why a read ran without the shared lock

    @property
    def encrypted(self) -> bool:
        return self.config.get("encryption") is not None

    @property
    def parity(self) -> bool:
        """Whether objects written here get parity sidecars (format v2)."""
        return self.config.get("version", 1) >= 2 and bool(self.config.get("parity"))
    @property
    def local_path(self) -> Path | None:
        """The repository's folder on this machine, or None when it is on the network."""
        return self.storage.local_root

    @property
    def location(self) -> str:
        """Where the repository is, for people (no secrets)."""
        return self.storage.describe()

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def init(cls, path, chunk_size: int = DEFAULT_CHUNK_SIZE, *, force: bool = False,
             encryption: NewEncryption | None = None, version: int = FORMAT_VERSION) -> "Repository":
        """Make a repository in the empty folder `path`, or in a new folder there (only that
        one: a missing parent is more often a typing mistake or an unplugged drive). A place
        on a read-only or RAM-backed filesystem is refused unless `force`. With `encryption`,
        an encrypted one: its recovery code is in the returned repository's `recovery_code`."""
        master = os.urandom(MASTER_KEY_SIZE) if encryption is not None else None
        if encryption is not None:
            encryption.kdf.check()
        storage, where = _place(path)
        _check_chunk_size(chunk_size)
        storage.check_new(CONFIG_FILE)
        problem = None if force else storage.place_problem()
        if problem:
            raise RefusedError(f"not creating a repository at {storage.describe()}: {problem}; "
                               "choose a folder on a disk, or add --force to create it there anyway")
        config = _new_config(chunk_size, version, master)
        keys = _new_keys(config, master, encryption)
        storage.make_folders(SUBDIRS + ((KEYS_DIR,) if keys else ()))
        # The key objects first, the configuration (which names the place a repository) last:
        # each written whole (a folder: flushed and renamed into place).
        for name, body in keys:
            storage.write(name, body)
        storage.write(CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
        return cls._made(where, config, storage, master, keys)

    @classmethod
    def _made(cls, where, config: dict, storage: Storage, master: bytes | None, keys) -> "Repository":
        if master is None:
            return cls(where, config, storage)
        repo = cls(where, config, storage, Sealer(master), keys[0][0][len("keys/"):-len(".json")])
        repo.recovery_code = recovery_code(master)
        return repo

    @property
    def sealer(self) -> Sealer | None:
        """The repository's keys (None when it is not encrypted); waits for an unlock begun in
        the background, and raises its WrongPassphraseError."""
        if self._pending is not None:
            self.wait_unlocked()
        return self._sealer

    @sealer.setter
    def sealer(self, sealer: Sealer | None) -> None:
        self._sealer = sealer

    @property
    def blob_id(self):
        """A chunk's id: BLAKE3-256, keyed in an encrypted repository."""
        sealer = self.sealer
        return sealer.blob_id if sealer is not None else blob_id

    def wait_unlocked(self) -> None:
        """Wait for the key when it is still being derived (Repository.open(background=True));
        WrongPassphraseError when the passphrase opened none of the keys. A command calls it
        before it writes anything, so a wrong passphrase leaves everything as it was."""
        with self._pending_lock:
            pending = self._pending
            if pending is None:
                return
            try:
                master, key_id = pending.result()
            finally:
                self.unlock_seconds = pending.seconds
                self.unlock_wait_seconds = pending.waited
            self._sealer, self.key_id = Sealer(master), key_id
            self._pending = None

    @classmethod
    def open(cls, path, unlock: Unlock | None = None, background: bool = False) -> "Repository":
        """Open a repository; an encrypted one is unlocked here, so every command that opens
        one asks for (or reads) its passphrase alike: `unlock` says how (default: the
        LIFEBOAT_PASSPHRASE_FILE / LIFEBOAT_RECOVERY_CODE_FILE files, else the terminal).
        A wrong passphrase raises WrongPassphraseError before anything is written. With
        `background`, a passphrase already known is tried on a background thread while the
        caller goes on: the first use of the key waits for it (`wait_unlocked`)."""
        storage, where = _place(path)
        try:
            return cls._unlocked(cls._opened(storage, where), unlock, background)
        except BaseException:
            storage.close()
            raise

    @classmethod
    def _unlocked(cls, repo: "Repository", unlock: Unlock | None, background: bool = False) -> "Repository":
        if repo.encrypted:                  # a refusal here is closed by open()
            repo._pending = (unlock or Unlock()).begin(repo.storage, repo.config)
            if not background:
                repo.wait_unlocked()
        return repo

    @classmethod
    def _opened(cls, storage: Storage, where) -> "Repository":
        if not storage.remote:
            storage.check_present(CONFIG_FILE)      # a folder: says whether the folder itself is missing
        try:
            raw = storage.read(CONFIG_FILE)
        except FileNotFoundError:
            storage.check_present(CONFIG_FILE)      # an object store: one request when all is well
            raise
        except OSError as exc:                      # a folder in its place, no permission, EIO
            raise RepositoryError(f"{storage.where(CONFIG_FILE)} is damaged or unreadable") from exc
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise RepositoryError(f"{storage.where(CONFIG_FILE)} is damaged or unreadable") from exc
        _check_config(config, storage.describe())
        missing = storage.missing_folders(SUBDIRS)
        if missing:
            raise RepositoryError(f"{storage.describe()} is damaged: the folder {missing[0]}/ is missing")
        return cls(where, config, storage)

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index.load(self.storage, self.index_cache, self.sealer)
        return self._index

    def reload_index(self) -> Index:
        self._index = None
        return self.index

    @contextmanager
    def reading(self, purpose: str):
        """Hold the shared lock while reading snapshots' data (a restore, verify), so a prune
        (exclusive) cannot delete or repack the packs being read; BusyError while one runs.
        A repository that cannot take a lock (a read-only drive, a full one) is read without
        it: nobody on this machine can prune it either; `unlocked` says why."""
        lock = Lock(self.storage, purpose=purpose)
        try:
            lock.acquire()
        except (BusyError, UnreachableError):
            raise
        except RepositoryError as exc:
            self.unlocked = exc.message
            log.warning("reading the repository without a lock: %s", exc.message)
            yield None
            return
        try:
            yield lock
        finally:
            lock.release()

    # -- snapshots ---------------------------------------------------------------------
    def snapshot_ids(self) -> list[str]:
        return sorted(i.name[len("snapshots/"):-len(".json")] for i in self.storage.list("snapshots/")
                      if i.name.endswith(".json") and "/" not in i.name[len("snapshots/"):])

    def load_manifest(self, snapshot_id: str) -> Manifest:
        name = f"snapshots/{snapshot_id}.json"
        raw = self.index_cache.get(name) if self.index_cache else None
        if raw is not None and blake3.blake3(raw).hexdigest() == snapshot_id:
            return self._parse_manifest(self._unseal_manifest(raw, snapshot_id), snapshot_id)
        try:
            raw = self.storage.read(name)
        except FileNotFoundError:
            raise RepositoryError(f"no snapshot {snapshot_id[:8]} in {self.path}") from None
        except UnreachableError:
            raise
        except StorageError as exc:
            # Unreadable sectors: what can be read, the rest repaired from the parity (format 2).
            raw = self._repaired_object(name, f"the manifest of snapshot {snapshot_id[:8]}", None,
                                        lambda data: blake3.blake3(data).hexdigest() == snapshot_id)
            if raw is None:
                raise DamageError(f"snapshot {snapshot_id[:8]}: its manifest cannot be read ({exc.message})") from exc
        if blake3.blake3(raw).hexdigest() != snapshot_id:
            raw = self._repaired_object(name, f"the manifest of snapshot {snapshot_id[:8]}", raw,
                                        lambda data: blake3.blake3(data).hexdigest() == snapshot_id)
            if raw is None:
                raise DamageError(f"snapshot {snapshot_id[:8]}: its manifest file is damaged")
        plain = self._unseal_manifest(raw, snapshot_id)
        if self.index_cache:
            self.index_cache.put(name, raw)
        return self._parse_manifest(plain, snapshot_id)

    def _unseal_manifest(self, raw: bytes, snapshot_id: str) -> bytes:
        """An encrypted repository's manifest, opened (its id, the hash of the stored bytes,
        was checked already: a manifest copied under another name fails that)."""
        if self.sealer is None:
            return raw
        try:
            return self.sealer.open(raw, AAD_MANIFEST)
        except SealBroken:
            raise DamageError(f"snapshot {snapshot_id[:8]}: its manifest is forged or altered "
                              "(it fails authentication)") from None

    def _parse_manifest(self, raw: bytes, snapshot_id: str) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
                raise RepositoryError(f"snapshot {snapshot_id[:8]} has an unsupported format")
            return Manifest.from_json(data, snapshot_id)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:    # JSON of another shape
            raise DamageError(f"snapshot {snapshot_id[:8]}: its manifest cannot be read") from exc

    def snapshots(self, name: str | None = None) -> list[SnapshotInfo]:
        out = []
        for sid in self.snapshot_ids():
            try:
                m = self.load_manifest(sid)
            except DamageError as exc:
                out.append(SnapshotInfo(sid, sid[:8], "(damaged)", "", 0, None, None, 0, 0,
                                        damaged=[exc.message]))
                continue
            if name is not None and m.name != name:
                continue
            out.append(self._info(m))
        out.sort(key=lambda s: (s.created, s.id))
        return out

    def _info(self, m: Manifest) -> SnapshotInfo:
        return SnapshotInfo(
            id=m.id,
            short_id=m.id[:8],
            name=m.name,
            created=m.created,
            disk_size=m.layout.disk_size,
            disk_model=m.source.get("model"),
            disk_serial=m.source.get("serial"),
            bytes_used=m.stats.get("bytes_used", 0),
            bytes_stored_new=m.stats.get("bytes_stored_new", 0),
            partitions=[
                {"number": p.number, "fs": p.fs, "label": p.label, "size": p.size, "used": p.used_bytes}
                for p in m.partitions
            ],
            **self._marks(m.id),
        )

    def _marks(self, snapshot_id: str) -> dict:
        """verified/damaged for SnapshotInfo: a damaged mark wins over a verified one."""
        damaged = self.damage_marked(snapshot_id)
        return {"verified": None if damaged else self.verified_at(snapshot_id), "damaged": damaged}

    def resolve(self, ref: str, name: str | None = None, serial: str | None = None) -> str:
        """A snapshot id from an id, a unique prefix of one, or "latest". "latest" is the newest
        snapshot of machine `name`; without a name, the newest of the disk with serial `serial`
        when the repository holds one; else the newest of the only machine in it. A snapshot
        whose manifest is damaged is never "latest"."""
        ids = self.snapshot_ids()
        if ref == "latest":
            snaps = [s for s in self.snapshots(name) if s.name != "(damaged)" or s.created]
            if name is None:
                same_disk = [s for s in snaps if serial and s.disk_serial == serial]
                names = sorted({s.name for s in snaps})
                if same_disk:
                    snaps = same_disk
                elif len(names) > 1:
                    raise RepositoryError(f"the repository holds backups of several computers "
                                          f"({', '.join(names)}); choose one with --name")
            if not snaps:
                where = f" named {name!r}" if name else ""
                raise RepositoryError(f"the repository holds no snapshot{where}")
            return snaps[-1].id
        ref = ref.lower()
        matches = [i for i in ids if i.startswith(ref)]
        if not matches:
            raise RepositoryError(f"no snapshot {ref!r} in {self.path}")
        if len(matches) > 1:
            raise RepositoryError(f"snapshot {ref!r} is ambiguous: give more of its id")
        return matches[0]

    def write_manifest(self, manifest: Manifest) -> str:
        raw = (json.dumps(manifest.to_json(), sort_keys=True, indent=1) + "\n").encode()
        if self.sealer is not None:
            raw = self.sealer.seal(raw, AAD_MANIFEST)
        sid = blake3.blake3(raw).hexdigest()
        write_protected(self.storage, f"snapshots/{sid}.json", raw, self.parity)
        if self.index_cache:
            self.index_cache.put(f"snapshots/{sid}.json", raw)
        manifest.id = sid
        return sid

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot: its manifest, then its check marks (a mark left by a crash in
        between names no snapshot and is ignored). Only under the exclusive lock (forget)."""
        self.storage.delete(f"snapshots/{snapshot_id}.json")
        self.storage.delete(parity_name(f"snapshots/{snapshot_id}.json"))     # its parity, if any
        if self.index_cache:
            self.index_cache.drop(f"snapshots/{snapshot_id}.json")
        for mark in ("verified", "damaged"):
            self.storage.delete(f"{mark}/{snapshot_id}.json")

    def verified_at(self, snapshot_id: str) -> str | None:
        try:
            return json.loads(self._mark_open(snapshot_id, self.storage.read(f"verified/{snapshot_id}.json")))["time"]
        except (OSError, LifeboatError, ValueError, KeyError, TypeError):
            return None

    def mark_verified(self, snapshot_id: str) -> None:
        """Record a clean check; clears a damaged mark (written first, removed second, so a
        crash in between leaves the damaged mark, which wins)."""
        try:
            self.storage.write(f"verified/{snapshot_id}.json",
                               self._mark_seal(snapshot_id, (json.dumps({"time": now_iso()}) + "\n").encode()))
            self.storage.delete(f"damaged/{snapshot_id}.json")
        except (OSError, LifeboatError):
            pass  # a read-only repository (live restore) simply keeps no mark

    def damage_marked(self, snapshot_id: str) -> list[str] | None:
        """What the last check found damaged in a snapshot (one line each), or None."""
        try:
            damage = json.loads(self._mark_open(snapshot_id, self.storage.read(f"damaged/{snapshot_id}.json")))["damage"]
        except FileNotFoundError:
            return None
        except (OSError, LifeboatError, ValueError, KeyError, TypeError):
            damage = None
        if not isinstance(damage, list):
            return ["its damage mark is unreadable: run verify again"]
        return [str(line) for line in damage] or ["damaged"]

    def mark_damaged(self, snapshot_id: str, damage: list[str]) -> None:
        """Record what a check found damaged; removes the verified mark. damaged/ is made on
        first use (repositories made before it existed stay valid)."""
        try:
            self.storage.write(f"damaged/{snapshot_id}.json", self._mark_seal(
                snapshot_id, (json.dumps({"time": now_iso(), "damage": list(damage)}) + "\n").encode()))
            self.storage.delete(f"verified/{snapshot_id}.json")
        except (OSError, LifeboatError):
            pass  # a read-only repository (live restore) simply keeps no mark

    def _mark_seal(self, snapshot_id: str, body: bytes) -> bytes:
        """A check mark's content; sealed in an encrypted repository (damage lines name
        partitions and files), bound to its snapshot so it cannot be moved to another."""
        return body if self.sealer is None else self.sealer.seal(body, AAD_MARK + snapshot_id.encode())

    def _mark_open(self, snapshot_id: str, raw: bytes) -> bytes:
        if self.sealer is None:
            return raw
        try:
            return self.sealer.open(raw, AAD_MARK + snapshot_id.encode())
        except SealBroken:
            raise ValueError("a forged or altered mark") from None

    # -- reading blobs -----------------------------------------------------------------
    def read_blob(self, bid: bytes) -> bytes:
        """The raw content of a blob, hash-checked; DamageError when missing or altered."""
        loc = self.index.get(bid)
        if loc is None:
            raise DamageError(f"chunk {bid.hex()[:16]} is missing from the repository")
        try:
            return self.decode(bid, self._read_stored(loc), loc.raw_len, loc.codec, loc.kind)
        except DamageError:
            stored = self.stored_from_repaired(loc)
            if stored is None:
                raise
            return self.decode(bid, stored, loc.raw_len, loc.codec, loc.kind)

    def read_at(self, bid: bytes, loc) -> bytes:
        """The raw content of blob `bid` read at a place recorded elsewhere (a snapshot's
        location table), checked like any blob: DamageError when the pack is gone or what is
        there is not that blob. No index is consulted and no repair tried."""
        return self.decode(bid, self._read_stored(loc), loc.raw_len, loc.codec, loc.kind)

    def _read_stored(self, loc) -> bytes:
        try:
            return self.storage.read(pack_name(loc.pack_id), loc.offset, loc.stored_len)
        except FileNotFoundError as exc:
            raise DamageError(f"pack {loc.pack_id[:16]} cannot be read: it is missing") from exc
        except OSError as exc:
            raise DamageError(f"pack {loc.pack_id[:16]} cannot be read: {exc.strerror}") from exc
        except UnreachableError:
            raise                 # the server is away: nothing is known to be damaged
        except StorageError as exc:
            raise DamageError(f"pack {loc.pack_id[:16]} cannot be read: {exc.message}") from exc

    def stored_from_repaired(self, loc) -> bytes | None:
        """A blob's stored bytes from its pack repaired in memory from the pack's parity
        (the last pack repaired is kept for the blobs read after it), or None when the pack
        has no usable parity. The caller's hash check says whether the blob came back."""
        with self._repair_lock:
            if self._repaired is None or self._repaired[0] != loc.pack_id:
                name = pack_name(loc.pack_id)
                try:
                    result = repair_object(self.storage, name, f"pack {loc.pack_id[:16]}")
                except DamageError:
                    return None
                self._repaired = (loc.pack_id, result.data)
                self.repaired_in_memory.add(name)
            data = self._repaired[1]
        return data[loc.offset : loc.offset + loc.stored_len]

    def forget_repairs(self) -> None:
        """Drop the pack repaired in memory (after repaired objects were written back)."""
        with self._repair_lock:
            self._repaired = None

    def _repaired_object(self, name: str, label: str, data: bytes | None, intact) -> bytes | None:
        """A small object (manifest) repaired in memory from its parity when `intact(bytes)`
        holds of the result; None otherwise. `data` None: read it again around bad sectors."""
        try:
            result = repair_object(self.storage, name, label, data)
        except DamageError:
            return None
        if not intact(result.data):
            return None
        self.repaired_in_memory.add(name)
        return result.data

    def decode(self, bid: bytes, stored: bytes, raw_len: int, codec: int, kind: int) -> bytes:
        if self.sealer is not None:
            try:
                stored = self.sealer.open_blob(bid, kind, stored)
            except SealBroken:
                raise DamageError(f"chunk {bid.hex()[:16]} is damaged or forged (it fails authentication)") from None
        try:
            if codec == CODEC_ZSTD:
                dctx = getattr(self._dctx, "d", None)
                if dctx is None:
                    dctx = self._dctx.d = zstandard.ZstdDecompressor()
                raw = dctx.decompress(stored, max_output_size=raw_len)
            else:
                raw = stored
        except zstandard.ZstdError as exc:
            raise DamageError(f"chunk {bid.hex()[:16]} is damaged (cannot decompress)") from exc
        if len(raw) != raw_len or self.blob_id(raw) != bid:
            raise DamageError(f"chunk {bid.hex()[:16]} is damaged (hash mismatch)")
        return raw

    def close(self) -> None:
        self.storage.close()

    # -- writing -----------------------------------------------------------------------
    def writer(self, zstd_level: int = 3, threads: int | None = None) -> "WriteSession":
        return WriteSession(self, zstd_level, threads)

    def free_space(self) -> int | None:
        """Bytes free where the repository lives; None when that place does not say."""
        return self.storage.free_space()


class WriteSession:
    """Holds the lock; appends blobs to packs; writes index files; never touches old files.

    A full pack is sealed (footer, fsync, rename) on a background thread while the next one
    fills: fsync waits on the drive, and the backup's workers need not wait with it."""

    INDEX_EVERY = 16   # packs between index files, so a killed backup leaves most indexed
    SEALS_IN_FLIGHT = 2

    def __init__(self, repo: Repository, zstd_level: int, threads: int | None = None):
        self.repo = repo
        self.compressor = Compressor(zstd_level, threads)
        self.pack_size = pack_size()
        self.lock = Lock(repo.storage)
        self._refresh_every = env_seconds("LIFEBOAT_INDEX_REFRESH", 10.0)
        self._next_refresh = time.monotonic() + self._refresh_every
        self._refreshing = threading.Lock()
        self.session_id = uuid.uuid4().hex
        self._unfinished: list[str] = []
        self._pack: PackWriter | None = None
        self._pending_ids: set[bytes] = set()
        self._sealing: deque[tuple[Future, PackWriter]] = deque()
        # A network store takes several uploads at once; a local drive one flush at a time.
        self._seal_threads = 3 if repo.storage.remote else 1
        self._sealer = ThreadPoolExecutor(self._seal_threads, thread_name_prefix="seal")
        # Format v2 keeps the bytes of each pack written to a file until its parity is made,
        # in one buffer reused from pack to pack (room for a pack's last blob, so it never grows).
        self._buffers = PackBuffers(self.pack_size + self.pack_size // 8 + 2 * 1024 * 1024)
        self._unindexed: list = []
        self.new_packs: list[WrittenPack] = []
        self.bytes_stored_new = 0
        self.bytes_resumed = 0     # stored bytes reused from packs of an unfinished backup
        self._resumable: set[bytes] = set()
        self.resumed_ids: set[bytes] = set()   # reused from an interrupted backup: checked before the snapshot
        self.chunk_tables: dict[int, bytes] = {}   # partition number -> its chunk table, for the location tables
        self.clock = StageClock()              # the backup sets its own, to report where time went
        # Called on the sealing thread with each pack once it is on the drive (the backup's
        # read-back check starts there, while the next packs are still being written).
        self.on_sealed = None

    def __enter__(self) -> "WriteSession":
        self.lock.acquire()
        self._clean_tmp()
        self.repo.reload_index()   # packs a killed backup left behind become usable again
        self._resumable = self._unfinished_blobs()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
            else:
                self._abandon()
        finally:
            self._sealer.shutdown(wait=True)
            self.lock.release()

    def _abandon(self) -> None:
        """After a failure: drop the open pack, keep the packs already sealed findable."""
        if self._pack is not None:
            self._pack.abort()
            self._pack = None
        while self._sealing:
            try:
                self._collect(keep=0)
            except (LifeboatError, OSError):
                pass             # a pack whose seal failed was removed by its writer
        if self._unindexed:
            try:
                write_index_file(self.repo.storage, self._unindexed, self.repo.sealer, self.repo.parity)
            except (OSError, LifeboatError):
                pass   # the packs are still found through their footers

    def _clean_tmp(self) -> None:
        self.repo.storage.scratch_clean(None)

    def has(self, bid: bytes) -> bool:
        if time.monotonic() >= self._next_refresh:
            self._refresh()
        return bid in self._pending_ids or bid in self.repo.index

    def _refresh(self) -> None:
        """Learn the packs other backups (other machines) sealed since this one started, so
        what they store is not stored again: their footers, read once each. One listing per
        LIFEBOAT_INDEX_REFRESH seconds (10 by default)."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self._next_refresh = time.monotonic() + self._refresh_every
            storage, index = self.repo.storage, self.repo.index
            for pack_id, info in unindexed_packs(storage, index):
                try:
                    index.add_pack(pack_id, read_footer(storage, info.name, info.size, self.repo.sealer))
                except DamageError:
                    continue          # one being replaced, or damaged: its blobs are simply stored again
        except (OSError, LifeboatError):
            pass                      # only deduplication with the others suffers
        finally:
            self._refreshing.release()

    # -- resuming: what an interrupted backup stored is reused, and counted apart ----------
    def _unfinished_blobs(self) -> set[bytes]:
        """Ids of the blobs in packs written by backups that never made their snapshot."""
        storage = self.repo.storage
        listed: list[str] = []
        try:
            for name in [UNFINISHED_FILE] + [i.name for i in storage.list(UNFINISHED_PREFIX)]:
                try:
                    listed += storage.read(name).decode(errors="replace").split()
                except (FileNotFoundError, IsADirectoryError):
                    continue
        except (OSError, LifeboatError):
            pass
        found: set[bytes] = set()
        index = self.repo.index
        for pack_id in dict.fromkeys(listed):
            try:
                entries = read_footer(storage, pack_name(pack_id), sealer=self.repo.sealer)
            except (OSError, ValueError, LifeboatError):
                continue     # gone or damaged: its blobs are not in the index either
            found.update(e.id for e in entries)
            if not index.has_pack(pack_id):
                # Sealed by a backup running beside this one after the index was read: known
                # from now on, so its blobs are reused, not stored again and counted twice.
                index.add_pack(pack_id, entries)
        return found

    def _note_unfinished(self, pack_id: str) -> None:
        self._unfinished.append(pack_id)
        try:
            self.repo.storage.write(f"{UNFINISHED_PREFIX}{self.session_id}",
                                    "".join(p + "\n" for p in self._unfinished).encode())
        except (OSError, LifeboatError):
            pass             # only the resumed/deduplicated split of a later backup suffers

    def reused(self, bid: bytes) -> int:
        """Call for a blob found already stored: its stored bytes when an interrupted backup
        stored it (counted once, into bytes_resumed), else 0 (true deduplication)."""
        if bid not in self._resumable:
            return 0
        self._resumable.discard(bid)
        self.resumed_ids.add(bid)
        where = self.repo.index.get(bid)
        n = where.stored_len if where else 0
        self.bytes_resumed += n
        return n

    def snapshot_written(self) -> None:
        """The snapshot that uses this session's packs (and the resumed ones) now exists."""
        try:
            # This backup's own list, and those of runs that are gone (their packs are
            # now referenced, or deduplicated against, by this snapshot).
            for info in self.repo.storage.list(UNFINISHED_PREFIX):
                self.repo.storage.delete(info.name)
            self.repo.storage.delete(UNFINISHED_FILE)
        except (OSError, LifeboatError):
            pass

    def _finish_pack(self, writer: PackWriter):
        with self.clock.stage("seal", writer.size):
            pack_id, entries = writer.finish()
        self._note_unfinished(pack_id)
        if self.on_sealed is not None:
            self.on_sealed(WrittenPack(pack_id, writer.digest, writer.size))
        return pack_id, entries

    def add(self, bid: bytes, stored: bytes, raw_len: int, kind: int, codec: int) -> int:
        """Store a blob unless present; returns the bytes newly written."""
        if self.has(bid):
            return 0
        with self.clock.stage("write", len(stored)):
            if self._pack is None:
                self._pack = PackWriter(self.repo.storage, self.repo.sealer, parity=self.repo.parity,
                                        buffers=self._buffers)
            self._pack.add(bid, stored, raw_len, kind, codec)
        self._pending_ids.add(bid)
        self.bytes_stored_new += len(stored)
        if self._pack.size >= self.pack_size:
            self._seal()
        return len(stored)

    def seal_blob(self, bid: bytes, kind: int, stored):
        """A blob's stored bytes as they go into a pack: sealed in an encrypted repository
        (called on the backup's worker threads, beside compression)."""
        sealer = self.repo.sealer
        return stored if sealer is None else sealer.seal_blob(bid, kind, stored)

    def add_meta(self, raw: bytes) -> str:
        bid = self.repo.blob_id(raw)
        if not self.has(bid):
            stored, codec = self.compressor.compress(raw)
            self.add(bid, self.seal_blob(bid, KIND_META, stored), len(raw), KIND_META, codec)
        else:
            self.reused(bid)
        return bid.hex()

    def _seal(self) -> None:
        writer, self._pack = self._pack, None
        self._sealing.append((self._sealer.submit(self._finish_pack, writer), writer))
        with self.clock.stage("seal wait"):
            self._collect(keep=self.SEALS_IN_FLIGHT + self._seal_threads - 1)

    def _collect(self, keep: int | None = None) -> None:
        """Index the packs whose seal has finished, oldest first, waiting for more until at
        most `keep` are in flight (None: never wait). An id joins the index before it leaves
        the pending set, so `has` never misses it."""
        while self._sealing:
            future, writer = self._sealing[0]
            if not future.done() and (keep is None or len(self._sealing) <= keep):
                return
            self._sealing.popleft()
            pack_id, entries = future.result()      # a failed seal raises its plain error
            self.repo.index.add_pack(pack_id, entries)
            self._pending_ids.difference_update(e.id for e in entries)
            self.new_packs.append(WrittenPack(pack_id, writer.digest, writer.size))
            self._unindexed.append((pack_id, entries))
            if len(self._unindexed) >= self.INDEX_EVERY:
                self._write_index()

    def _write_index(self) -> None:
        if self._unindexed:
            name, body = encode_index_file(self._unindexed, self.repo.sealer)
            write_protected(self.repo.storage, name, body, self.repo.parity)
            if self.repo.index_cache:
                self.repo.index_cache.put(name, body)   # the next backup from here needs not fetch it
            self._unindexed = []

    def seal_packs(self) -> None:
        """Seal the open pack and wait for every seal, so each blob written has its place in
        the in-memory index; the index file naming them waits for `flush` (one file, not two,
        when a backup then adds its location tables)."""
        if self._pack is not None and self._pack.entries:
            self._seal()
        elif self._pack is not None:
            self._pack.abort()
            self._pack = None
        self._collect(keep=0)

    def flush(self) -> None:
        """Seal the open pack and index everything written; call before writing a manifest."""
        self.seal_packs()
        self._write_index()
