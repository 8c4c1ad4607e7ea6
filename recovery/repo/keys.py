"""Key objects of an encrypted repository (keys/<id>.json) and where a passphrase comes from.

A key object holds the repository's master key wrapped (AES-256-GCM) by a key derived from
one passphrase with Argon2id; several key objects, several passphrases, one master key. The
recovery code is the master key itself, written for people (base32 with a checksum).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import blake3

from recovery.errors import RepositoryError, UsageError, WrongPassphraseError
from recovery.repo.sealing import MASTER_KEY_SIZE, NONCE_SIZE, TAG_SIZE, key_check

KEYS_PREFIX = "keys/"
KEY_FORMAT = "lifeboat-key"
PASSPHRASE_ENV = "LIFEBOAT_PASSPHRASE_FILE"
RECOVERY_CODE_ENV = "LIFEBOAT_RECOVERY_CODE_FILE"

# Argon2id defaults: RFC 9106's setting for machines that cannot spare 2 GiB (64 MiB, 3 passes,
# 4 lanes), which a live system on an old PC with 1 GiB of RAM can always give. It takes ~0.1 s
# here (256 MiB took 0.3 s, a fixed cost that was a fifth of a small restore); a stronger
# setting is one option away (repo init --kdf-memory ...). Stored in each key object, so a key
# made with other figures still opens.
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_ITERATIONS = 3
DEFAULT_PARALLELISM = 4
# Bounds a key object may ask for: a forged object must not make unlocking eat all memory.
MAX_MEMORY_KIB = 4 * 1024 * 1024
MAX_ITERATIONS = 64
MAX_PARALLELISM = 64
MIN_PASSPHRASE = 8
MIN_SALT = 8          # Argon2's least


@dataclass(frozen=True)
class KdfParams:
    memory_kib: int = DEFAULT_MEMORY_KIB
    iterations: int = DEFAULT_ITERATIONS
    parallelism: int = DEFAULT_PARALLELISM

    def check(self) -> None:
        if not 8 * self.parallelism <= self.memory_kib <= MAX_MEMORY_KIB:
            raise UsageError(f"Argon2 memory must be between {8 * self.parallelism} KiB and "
                             f"{MAX_MEMORY_KIB} KiB")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise UsageError(f"Argon2 iterations must be between 1 and {MAX_ITERATIONS}")
        if not 1 <= self.parallelism <= MAX_PARALLELISM:
            raise UsageError(f"Argon2 parallelism must be between 1 and {MAX_PARALLELISM}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _normal(passphrase: str) -> bytes:
    """The bytes a passphrase stands for: NFC, so the same words typed on another keyboard
    layout or system give the same key."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _wrapping_key(passphrase: str, salt: bytes, kdf: KdfParams) -> bytes:
    early = _early.pop((_normal(passphrase), salt, kdf), None)
    if early is not None:
        early.join()
        if early.key is not None:
            return early.key
    return _argon2id(_normal(passphrase), salt, kdf)


def _argon2id(secret: bytes, salt: bytes, kdf: KdfParams) -> bytes:
    from argon2.low_level import Type, hash_secret_raw   # here: a plain repository never loads it
    return hash_secret_raw(secret, salt, time_cost=kdf.iterations, memory_cost=kdf.memory_kib,
                           parallelism=kdf.parallelism, hash_len=32, type=Type.ID)


class _EarlyHash(threading.Thread):
    """One Argon2id begun before the repository is opened (see start_early)."""

    def __init__(self, secret: bytes, salt: bytes, kdf: KdfParams):
        super().__init__(name="unlock-early", daemon=True)
        self._args = (secret, salt, kdf)
        self.key: bytes | None = None

    def run(self) -> None:
        try:
            self.key = _argon2id(*self._args)
        except Exception:      # noqa: BLE001 - the ordinary unlock derives it again and reports
            self.key = None
        self._args = None


# Derivations begun by start_early, by (passphrase bytes, salt, parameters); taken once.
_early: dict[tuple[bytes, bytes, KdfParams], _EarlyHash] = {}


def start_early(where: str | None) -> None:
    """Begin deriving the passphrase's key for a repository folder on this machine before the
    command has even loaded what opens it (~0.1 s of imports that Argon2id, free of the GIL,
    runs beside). Only for a passphrase kept in a file (the option or LIFEBOAT_PASSPHRASE_FILE)
    and the first key object, which the unlock tries first; anything unusual (no such folder,
    no key, an unreadable file, a recovery code given) is left to the ordinary unlock, which
    reports it. The result is only ever used for the same passphrase, salt and parameters."""
    path = os.environ.get(PASSPHRASE_ENV)
    if not where or not path or os.environ.get(RECOVERY_CODE_ENV):
        return
    try:
        found = sorted((Path(where) / KEYS_PREFIX).glob("*.json"))
        if not found:
            return
        key = KeyObject.parse(found[0].name, found[0].read_bytes())
        secret = _normal(read_secret_file(path, "passphrase"))
    except (OSError, ValueError, RepositoryError, UsageError):
        return
    early = _EarlyHash(secret, key.salt, key.kdf)
    _early[(secret, key.salt, key.kdf)] = early
    early.start()


def _wrap_aad(repo_id: str, key_id: str) -> bytes:
    return f"lifeboat key {repo_id} {key_id}".encode()


def new_key_object(master: bytes, passphrase: str, repo_id: str, kdf: KdfParams,
                   created: str) -> tuple[str, bytes]:
    """(key id, the key object's bytes) for one passphrase."""
    kdf.check()
    key_id = os.urandom(8).hex()
    salt = os.urandom(16)
    nonce = os.urandom(NONCE_SIZE)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM   # only encrypted repositories load it
    wrapped = AESGCM(_wrapping_key(passphrase, salt, kdf)).encrypt(nonce, master, _wrap_aad(repo_id, key_id))
    body = {
        "format": KEY_FORMAT, "version": 1, "id": key_id, "created": created,
        "kdf": {"name": "argon2id", "memory_kib": kdf.memory_kib, "iterations": kdf.iterations,
                "parallelism": kdf.parallelism, "salt": _b64(salt)},
        "wrap": "aes-256-gcm", "wrapped": _b64(nonce + wrapped),
    }
    return key_id, (json.dumps(body, indent=1) + "\n").encode()


def key_name(key_id: str) -> str:
    return f"{KEYS_PREFIX}{key_id}.json"


@dataclass
class KeyObject:
    id: str
    created: str
    kdf: KdfParams
    salt: bytes
    wrapped: bytes

    @classmethod
    def parse(cls, name: str, raw: bytes) -> "KeyObject":
        try:
            data = json.loads(raw)
            k = data["kdf"]
            if data.get("format") != KEY_FORMAT or k.get("name") != "argon2id" or data.get("wrap") != "aes-256-gcm":
                raise ValueError
            kdf = KdfParams(int(k["memory_kib"]), int(k["iterations"]), int(k["parallelism"]))
            kdf.check()
            # validate: a damaged field must not decode to fewer bytes (b64decode drops what it
            # does not know), which Argon2 and AES-GCM would refuse with their own exceptions
            salt = base64.b64decode(k["salt"], validate=True)
            wrapped = base64.b64decode(data["wrapped"], validate=True)
            if len(salt) < MIN_SALT or len(wrapped) != NONCE_SIZE + MASTER_KEY_SIZE + TAG_SIZE:
                raise ValueError
            return cls(str(data["id"]), str(data.get("created", "")), kdf, salt, wrapped)
        except (ValueError, KeyError, TypeError, AttributeError, UsageError):
            raise RepositoryError(f"the key object {name} is damaged or of an unknown kind") from None

    def unwrap(self, passphrase: str, repo_id: str) -> bytes | None:
        """The master key, or None when the passphrase is not this key's."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        aead = AESGCM(_wrapping_key(passphrase, self.salt, self.kdf))
        try:
            master = aead.decrypt(self.wrapped[:NONCE_SIZE], self.wrapped[NONCE_SIZE:], _wrap_aad(repo_id, self.id))
        except InvalidTag:
            return None
        return master if len(master) == MASTER_KEY_SIZE else None


def key_objects(storage) -> list[KeyObject]:
    out = []
    for info in sorted(storage.list(KEYS_PREFIX), key=lambda i: i.name):
        if info.name.endswith(".json"):
            out.append(KeyObject.parse(info.name, storage.read(info.name)))
    return out


# -- recovery codes --------------------------------------------------------------------------
_CODE_CHECK = 3


def recovery_code(master: bytes) -> str:
    """The master key for paper: 56 base32 letters in groups of four, the last five a checksum
    that catches a mistyped letter."""
    text = base64.b32encode(master + blake3.blake3(master).digest()[:_CODE_CHECK]).decode().rstrip("=")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def parse_recovery_code(text: str) -> bytes:
    letters = "".join(ch for ch in text.upper() if ch.isalnum())
    letters = letters.replace("0", "O").replace("1", "I").replace("8", "B")   # base32 has no 0, 1 or 8
    try:
        raw = base64.b32decode(letters + "=" * (-len(letters) % 8))
    except ValueError:
        raw = b""
    master, check = raw[:MASTER_KEY_SIZE], raw[MASTER_KEY_SIZE:]
    if len(raw) != MASTER_KEY_SIZE + _CODE_CHECK or blake3.blake3(master).digest()[:_CODE_CHECK] != check:
        raise WrongPassphraseError("that is not a valid recovery code: check each group of four letters")
    return master


# -- where the secret comes from -------------------------------------------------------------
# Set by the command line on a terminal (getpass): asks once with the given prompt.
ask_passphrase: Callable[[str], str] | None = None


def read_secret_file(path: str, what: str) -> str:
    """A passphrase or recovery code kept in a file: its first line, as typed."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"the {what} file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"the {what} file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the {what} file {path} is not UTF-8 text") from None
    line = text.split("\n", 1)[0].removesuffix("\r")
    if not line:
        raise UsageError(f"the {what} file {path} is empty")
    return line


class PassphraseNeeded(UsageError):
    """An encrypted repository, and no passphrase to try: the caller may ask for one."""


@dataclass
class Unlock:
    """How to unlock an encrypted repository: a passphrase (given, or from a file), a
    recovery code file, or a question on the terminal. Unset fields fall back to
    LIFEBOAT_PASSPHRASE_FILE / LIFEBOAT_RECOVERY_CODE_FILE, then to `ask_passphrase`."""

    passphrase: str | None = None
    passphrase_file: str | None = None
    recovery_code_file: str | None = None
    ask: Callable[[str], str] | None = None
    attempts: int = 3                      # questions asked before giving up
    terminal: bool = True                  # may fall back to `ask_passphrase` (not in the TUI)

    def master_key(self, storage, config: dict) -> tuple[bytes, str | None]:
        """(master key, id of the key object that opened it; None for a recovery code)."""
        return self.begin(storage, config).result()

    def begin(self, storage, config: dict) -> "PendingKey":
        """Start unlocking: everything that can fail at once (no passphrase, an unreadable
        file, a damaged key object, a wrong recovery code) fails here; a passphrase already
        known (given or from a file) is then tried against the key objects on a background
        thread, as Argon2id takes a fixed ~0.3 s or more that the command can spend on work
        that needs no key. Asking on the terminal stays in this thread, answer by answer."""
        enc = config["encryption"]
        repo_id = config.get("id", "")
        code_file = self.recovery_code_file or (None if self.passphrase or self.passphrase_file
                                                else os.environ.get(RECOVERY_CODE_ENV))
        if code_file:
            master = parse_recovery_code(read_secret_file(code_file, "recovery code"))
            if key_check(master) != enc.get("key_check"):
                raise WrongPassphraseError("that recovery code is not this repository's")
            return PendingKey.done((master, None))
        keys = key_objects(storage)
        if not keys:
            raise RepositoryError(f"{storage.describe()} is encrypted but holds no key (keys/ is empty); "
                                  "unlock it with its recovery code (--recovery-code-file)")
        given = self.passphrase
        path = self.passphrase_file or (None if given else os.environ.get(PASSPHRASE_ENV))
        if given is None and path:
            given = read_secret_file(path, "passphrase")
        if given is not None:
            return PendingKey.started(keys, given, repo_id, enc)
        ask = self.ask or (ask_passphrase if self.terminal else None)
        if ask is None:
            raise PassphraseNeeded("the repository is encrypted: give its passphrase with --passphrase-file FILE "
                                   f"or {PASSPHRASE_ENV}=FILE (or run on a terminal to be asked)")
        for attempt in range(self.attempts):
            started = time.monotonic()
            found = _try_keys(keys, ask("Passphrase of the repository: "), repo_id, enc)
            if found is not None:
                return PendingKey.done(found, time.monotonic() - started)
            if attempt + 1 < self.attempts:
                ask_passphrase_wrong()
        raise WrongPassphraseError("wrong passphrase: it opens none of this repository's keys")


class PendingKey:
    """A master key being derived from a passphrase on its own thread (argon2-cffi releases
    the GIL for the whole hash), or one already known. `result()` waits for it; a wrong
    passphrase raises WrongPassphraseError there, each time it is asked."""

    def __init__(self):
        self._found: tuple[bytes, str | None] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.seconds = 0.0                 # the derivation's own wall time
        self.waited = 0.0                  # how long result() blocked, in all

    @classmethod
    def done(cls, found: tuple[bytes, str | None], seconds: float = 0.0) -> "PendingKey":
        pending = cls()
        pending._found, pending.seconds, pending.waited = found, seconds, seconds
        return pending

    @classmethod
    def started(cls, keys: list[KeyObject], passphrase: str, repo_id: str, enc: dict) -> "PendingKey":
        pending = cls()

        def derive() -> None:
            started = time.monotonic()
            try:
                found = _try_keys(keys, passphrase, repo_id, enc)
                if found is None:
                    raise WrongPassphraseError("wrong passphrase: it opens none of this repository's keys")
                pending._found = found
            except BaseException as exc:      # handed to whoever waits for the key
                pending._error = exc
            finally:
                pending.seconds = time.monotonic() - started

        # A daemon: a command that fails before it needs the key does not wait for the hash.
        pending._thread = threading.Thread(target=derive, name="unlock", daemon=True)
        pending._thread.start()
        return pending

    def result(self) -> tuple[bytes, str | None]:
        if self._thread is not None:
            started = time.monotonic()
            self._thread.join()
            self.waited += time.monotonic() - started
            self._thread = None
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found


def ask_passphrase_wrong() -> None:
    import sys

    print("That passphrase is wrong; try again.", file=sys.stderr)


def _try_keys(keys: list[KeyObject], passphrase: str, repo_id: str, enc: dict) -> tuple[bytes, str] | None:
    for key in keys:
        master = key.unwrap(passphrase, repo_id)
        if master is not None and key_check(master) == enc.get("key_check"):
            return master, key.id
    return None


def new_passphrase(ask: Callable[[str], str] | None, passphrase_file: str | None, what: str = "new") -> str:
    """A new passphrase: from a file, or typed twice on the terminal (masked)."""
    if passphrase_file:
        text = read_secret_file(passphrase_file, "passphrase")
    else:
        ask = ask or ask_passphrase
        if ask is None:
            raise UsageError("give the passphrase with --passphrase-file FILE or "
                             f"{PASSPHRASE_ENV}=FILE (or run on a terminal to be asked)")
        text = ask(f"Type the {what} passphrase: ")
        if ask(f"Type the {what} passphrase again: ") != text:
            raise UsageError("the two passphrases differ; nothing was changed")
    if len(text) < MIN_PASSPHRASE:
        raise UsageError(f"a passphrase needs at least {MIN_PASSPHRASE} characters")
    return text


# -- managing the key objects of an open repository -------------------------------------------
def add_key(repo, passphrase: str, kdf: KdfParams, created: str) -> str:
    """Wrap the open repository's master key for one more passphrase; its key id."""
    if repo.sealer is None:
        raise UsageError(f"{repo.location} is not encrypted: it has no keys")
    key_id, body = new_key_object(repo.sealer.master, passphrase, repo.config["id"], kdf, created)
    repo.storage.write(key_name(key_id), body)
    return key_id


def remove_key(repo, key_id: str) -> None:
    """Remove one key object; never the last (the repository would open only with its
    recovery code)."""
    from recovery.errors import RefusedError

    if repo.sealer is None:
        raise UsageError(f"{repo.location} is not encrypted: it has no keys")
    ids = [k.id for k in key_objects(repo.storage)]
    matches = [k for k in ids if k.startswith(key_id.lower())] if key_id else []
    if not matches:
        raise UsageError(f"no key {key_id!r} in {repo.location} (see: lifeboat key list)")
    if len(matches) > 1:
        raise UsageError(f"key {key_id!r} is ambiguous: give more of its id")
    if len(ids) == 1:
        raise RefusedError("not removing the repository's only key: add another first (lifeboat key add)")
    repo.storage.delete(key_name(matches[0]))
