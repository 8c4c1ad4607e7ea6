"""Key objects, recovery codes and where a passphrase comes from (recovery/repo/keys.py), at
their edges: the Argon2 bounds, the key object's fields, each refusal and its message. Key
objects are made with the smallest Argon2 cost so the tests stay fast; files are real."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from types import SimpleNamespace

import blake3
import pytest

from recovery.errors import RefusedError, RepositoryError, UsageError, WrongPassphraseError
from recovery.repo import keys
from recovery.repo.keys import (
    KdfParams,
    KeyObject,
    PassphraseNeeded,
    Unlock,
    add_key,
    key_name,
    key_objects,
    new_key_object,
    new_passphrase,
    parse_recovery_code,
    read_secret_file,
    recovery_code,
    remove_key,
)
from recovery.repo.sealing import key_check
from recovery.storage.local import LocalStorage

CHEAP = KdfParams(16, 1, 2)
MASTER = bytes(range(32))
REPO_ID = "0123456789abcdef"


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "tmp").mkdir()
    with LocalStorage(tmp_path) as s:
        yield s


def test_argon2_defaults_and_bounds_with_their_messages():
    assert KdfParams() == KdfParams(64 * 1024, 3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        KdfParams().iterations = 1                  # a shared default cannot be changed
    # the variables README documents
    assert (keys.PASSPHRASE_ENV, keys.RECOVERY_CODE_ENV) == ("LIFEBOAT_PASSPHRASE_FILE", "LIFEBOAT_RECOVERY_CODE_FILE")
    KdfParams(16, 1, 2).check()
    KdfParams(4 * 1024 * 1024, 64, 64).check()
    KdfParams(8, 1, 1).check()
    for bad, message in [
        (KdfParams(15, 1, 2), "Argon2 memory must be between 16 KiB and 4194304 KiB"),
        (KdfParams(4 * 1024 * 1024 + 1, 1, 2), "Argon2 memory must be between 16 KiB and 4194304 KiB"),
        (KdfParams(16, 0, 2), "Argon2 iterations must be between 1 and 64"),
        (KdfParams(16, 65, 2), "Argon2 iterations must be between 1 and 64"),
        (KdfParams(16, 1, 0), "Argon2 parallelism must be between 1 and 64"),
        (KdfParams(1024, 1, 65), "Argon2 parallelism must be between 1 and 64"),
    ]:
        with pytest.raises(UsageError) as err:
            bad.check()
        assert str(err.value) == message, bad


def test_a_key_object_holds_the_documented_fields_and_opens_with_its_passphrase_only():
    key_id, raw = new_key_object(MASTER, "correct horse", REPO_ID, CHEAP, "2026-12-01T00:00:00Z")
    assert raw.endswith(b"}\n") and key_name(key_id) == f"keys/{key_id}.json"
    data = json.loads(raw)
    assert set(data) == {"format", "version", "id", "created", "kdf", "wrap", "wrapped"}
    assert (data["format"], data["version"], data["id"], data["created"], data["wrap"]) == (
        "lifeboat-key", 1, key_id, "2026-12-01T00:00:00Z", "aes-256-gcm")
    assert len(key_id) == 16 and int(key_id, 16) >= 0
    assert data["kdf"]["name"] == "argon2id"
    assert (data["kdf"]["memory_kib"], data["kdf"]["iterations"], data["kdf"]["parallelism"]) == (16, 1, 2)
    assert len(base64.b64decode(data["kdf"]["salt"])) == 16
    assert len(base64.b64decode(data["wrapped"])) == 12 + 32 + 16       # nonce, key, tag
    key = KeyObject.parse("keys/x.json", raw)
    assert (key.id, key.created, key.kdf) == (key_id, "2026-12-01T00:00:00Z", CHEAP)
    assert key.unwrap("correct horse", REPO_ID) == MASTER
    assert key.unwrap("correct horsE", REPO_ID) is None
    assert key.unwrap("correct horse", "another") is None              # bound to its repository
    # the same words in another Unicode normal form open it
    key_id, raw = new_key_object(MASTER, "caf\u00e9 au lait", REPO_ID, CHEAP, "")
    assert KeyObject.parse("k", raw).unwrap("cafe\u0301 au lait", REPO_ID) == MASTER
    with pytest.raises(UsageError, match="Argon2 iterations"):
        new_key_object(MASTER, "correct horse", REPO_ID, KdfParams(16, 0, 2), "")


def test_damaged_or_foreign_key_objects_are_refused_by_name():
    _, raw = new_key_object(MASTER, "correct horse", REPO_ID, CHEAP, "")
    good = json.loads(raw)
    no_created = dict(good)
    del no_created["created"]
    assert KeyObject.parse("k", json.dumps(no_created).encode()).created == ""

    def changed(**fields):
        d = json.loads(raw)
        for k, v in fields.items():
            if k.startswith("kdf_"):
                d["kdf"][k[4:]] = v
            else:
                d[k] = v
        return json.dumps(d).encode()

    for bad in [b"not json", b"[]", changed(format="other"), changed(wrap="chacha"), changed(kdf_name="scrypt"),
                changed(kdf_iterations=0), changed(kdf_memory_kib="lots"), changed(kdf_salt="***"),
                changed(wrapped=None), changed(kdf=None), changed(kdf=[1]), b"\"text\"", b"{}"]:
        with pytest.raises(RepositoryError) as err:
            KeyObject.parse("keys/abc.json", bad)
        assert str(err.value) == "the key object keys/abc.json is damaged or of an unknown kind", bad
    # fields that decode to too few bytes (b64decode would drop the unknown letters) or to
    # bytes Argon2 or AES-GCM cannot take are damage, not an exception from either library
    for bad in [changed(kdf_salt="***"), changed(kdf_salt=base64.b64encode(b"7bytes!").decode()),
                changed(wrapped="@@"), changed(wrapped=base64.b64encode(bytes(59)).decode()),
                changed(wrapped=good["wrapped"] + "!"),
                changed(kdf_salt=good["kdf"]["salt"][:2] + "!" + good["kdf"]["salt"][2:])]:
        with pytest.raises(RepositoryError, match="^the key object k is damaged or of an unknown kind$"):
            KeyObject.parse("k", bad)
    assert KeyObject.parse("k", changed(kdf_salt=base64.b64encode(b"8 bytes!").decode())).unwrap("x", REPO_ID) is None


def test_a_wrapped_key_of_the_wrong_length_opens_nothing():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kdf = CHEAP
    salt, nonce = b"s" * 16, b"n" * 12
    wrapped = AESGCM(keys._wrapping_key("pw-pw-pw", salt, kdf)).encrypt(nonce, b"k" * 31, keys._wrap_aad(REPO_ID, "id"))
    assert KeyObject("id", "", kdf, salt, nonce + wrapped).unwrap("pw-pw-pw", REPO_ID) is None
    assert keys._wrap_aad(REPO_ID, "id") == b"lifeboat key 0123456789abcdef id"


def test_key_objects_are_listed_in_name_order_and_other_files_ignored(storage, tmp_path):
    made = [new_key_object(MASTER, "correct horse", REPO_ID, CHEAP, "") for _ in range(3)]
    for key_id, raw in made:
        storage.write(key_name(key_id), raw)
    storage.write("keys/notes.txt", b"not a key")
    assert [k.id for k in key_objects(storage)] == sorted(k for k, _ in made)


def test_recovery_codes_are_grouped_checked_and_forgiving_of_look_alikes():
    code = recovery_code(MASTER)
    groups = code.split("-")
    assert len(groups) == 14 and all(len(g) == 4 for g in groups)
    assert "".join(groups) == base64.b32encode(MASTER + blake3.blake3(MASTER).digest()[:3]).decode()
    assert parse_recovery_code(code) == MASTER
    assert parse_recovery_code(" " + code.lower().replace("-", " ") + "\n") == MASTER
    typed = code.replace("O", "0").replace("I", "1").replace("B", "8")
    assert parse_recovery_code(typed) == MASTER
    # a code whose last letter is X (a letter, not padding: 35 bytes are 56 letters exactly)
    ending_x = next(m for m in (bytes([i]) * 32 for i in range(256)) if recovery_code(m).endswith("X"))
    assert len(recovery_code(ending_x)) == 14 * 5 - 1 and parse_recovery_code(recovery_code(ending_x)) == ending_x
    for bad in [code[:-1] + ("A" if code[-1] != "A" else "B"), code[:-5], code + "AAAA", "", "!!!!", "AAAAAAA",
                "9" * 56, code[:-1] + "9"]:
        with pytest.raises(WrongPassphraseError) as err:
            parse_recovery_code(bad)
        assert str(err.value) == "that is not a valid recovery code: check each group of four letters"


def test_secret_files_give_their_first_line_or_a_plain_refusal(tmp_path):
    f = tmp_path / "pass"
    f.write_bytes(b"first line\r\nsecond\n")
    assert read_secret_file(str(f), "passphrase") == "first line"
    f.write_bytes("  spaced \u00e9".encode())
    assert read_secret_file(str(f), "passphrase") == "  spaced \u00e9"
    for content, message in [(b"", "is empty"), (b"\nsecond", "is empty"), (b"\xff\xfe", "is not UTF-8 text")]:
        f.write_bytes(content)
        with pytest.raises(UsageError) as err:
            read_secret_file(str(f), "recovery code")
        assert str(err.value) == f"the recovery code file {f} {message}"
    with pytest.raises(UsageError) as err:
        read_secret_file(str(tmp_path / "none"), "passphrase")
    assert str(err.value) == f"the passphrase file {tmp_path / 'none'} does not exist"
    with pytest.raises(UsageError) as err:
        read_secret_file(str(tmp_path), "passphrase")
    assert str(err.value) == f"the passphrase file {tmp_path} cannot be read: Is a directory"


def _repo(storage, tmp_path):
    """An encrypted repository's keys: the configuration's key check and one key object."""
    key_id, raw = new_key_object(MASTER, "first passphrase", REPO_ID, CHEAP, "")
    storage.write(key_name(key_id), raw)
    config = {"id": REPO_ID, "encryption": {"key_check": key_check(MASTER)}}
    return key_id, config


def test_unlocking_by_passphrase_file_environment_and_recovery_code(storage, tmp_path, monkeypatch):
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV, raising=False)
    key_id, config = _repo(storage, tmp_path)
    assert Unlock(passphrase="first passphrase").master_key(storage, config) == (MASTER, key_id)
    pf = tmp_path / "pf"
    pf.write_text("first passphrase\n")
    assert Unlock(passphrase_file=str(pf)).master_key(storage, config) == (MASTER, key_id)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, str(pf))
    assert Unlock(terminal=False).master_key(storage, config) == (MASTER, key_id)
    with pytest.raises(WrongPassphraseError, match="^wrong passphrase: it opens none of this repository's keys$"):
        Unlock(passphrase="other passphrase").master_key(storage, config)
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    code = tmp_path / "code"
    code.write_text(recovery_code(MASTER) + "\n")
    assert Unlock(recovery_code_file=str(code)).master_key(storage, config) == (MASTER, None)
    monkeypatch.setenv(keys.RECOVERY_CODE_ENV, str(code))
    assert Unlock(terminal=False).master_key(storage, config) == (MASTER, None)
    # a passphrase given outranks the recovery code in the environment
    assert Unlock(passphrase="first passphrase").master_key(storage, config) == (MASTER, key_id)
    assert Unlock(passphrase_file=str(pf)).master_key(storage, config) == (MASTER, key_id)
    other = bytes(32)
    code.write_text(recovery_code(other))
    with pytest.raises(WrongPassphraseError, match="^that recovery code is not this repository's$"):
        Unlock(terminal=False).master_key(storage, config)
    # a key that opens but holds another master key does not count
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV)
    wrong_id, raw = new_key_object(other, "first passphrase", REPO_ID, CHEAP, "")
    storage.write(key_name(wrong_id), raw)
    assert Unlock(passphrase="first passphrase").master_key(storage, config) == (MASTER, key_id)


def test_unlocking_asks_up_to_its_attempts_and_says_when_it_cannot_ask(storage, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV, raising=False)
    monkeypatch.setattr(keys, "ask_passphrase", None)
    key_id, config = _repo(storage, tmp_path)
    answers = iter(["wrong one", "wrong two", "first passphrase"])
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return next(answers)
    assert Unlock(ask=ask).master_key(storage, config) == (MASTER, key_id)
    assert prompts == ["Passphrase of the repository: "] * 3
    assert capsys.readouterr().err == "That passphrase is wrong; try again.\n" * 2
    answers = iter(["wrong"] * 5)
    prompts.clear()
    with pytest.raises(WrongPassphraseError, match="^wrong passphrase"):
        Unlock(ask=ask).master_key(storage, config)
    assert len(prompts) == 3 and capsys.readouterr().err == "That passphrase is wrong; try again.\n" * 2
    answers = iter(["wrong"] * 5)
    prompts.clear()
    with pytest.raises(WrongPassphraseError, match="^wrong passphrase"):
        Unlock(ask=ask, attempts=2).master_key(storage, config)
    assert len(prompts) == 2 and capsys.readouterr().err == "That passphrase is wrong; try again.\n"
    with pytest.raises(PassphraseNeeded) as err:
        Unlock().master_key(storage, config)
    assert str(err.value) == ("the repository is encrypted: give its passphrase with --passphrase-file FILE "
                              "or LIFEBOAT_PASSPHRASE_FILE=FILE (or run on a terminal to be asked)")
    monkeypatch.setattr(keys, "ask_passphrase", lambda prompt: "first passphrase")
    assert Unlock().master_key(storage, config) == (MASTER, key_id)
    with pytest.raises(PassphraseNeeded):
        Unlock(terminal=False).master_key(storage, config)
    storage.delete(key_name(key_id))
    with pytest.raises(RepositoryError) as err:
        Unlock(passphrase="first passphrase").master_key(storage, config)
    assert str(err.value) == (f"{storage.describe()} is encrypted but holds no key (keys/ is empty); "
                              "unlock it with its recovery code (--recovery-code-file)")


def test_a_new_passphrase_is_typed_twice_or_read_from_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "ask_passphrase", None)
    typed = iter(["long enough", "long enough"])
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return next(typed)
    assert new_passphrase(ask, None) == "long enough"
    assert prompts == ["Type the new passphrase: ", "Type the new passphrase again: "]
    typed = iter(["long enough", "long enougH"])
    with pytest.raises(UsageError, match="^the two passphrases differ; nothing was changed$"):
        new_passphrase(ask, None, "first")
    f = tmp_path / "p"
    f.write_text("12345678")
    assert new_passphrase(None, str(f)) == "12345678"
    f.write_text("1234567")
    with pytest.raises(UsageError, match="^a passphrase needs at least 8 characters$"):
        new_passphrase(None, str(f))
    with pytest.raises(UsageError) as err:
        new_passphrase(None, None)
    assert str(err.value) == ("give the passphrase with --passphrase-file FILE or LIFEBOAT_PASSPHRASE_FILE=FILE "
                              "(or run on a terminal to be asked)")
    monkeypatch.setattr(keys, "ask_passphrase", lambda prompt: "from the terminal")
    assert new_passphrase(None, None) == "from the terminal"


def test_keys_are_added_and_removed_but_never_the_last(storage, tmp_path):
    from recovery.repo.sealing import Sealer

    key_id, config = _repo(storage, tmp_path)
    repo = SimpleNamespace(sealer=Sealer(MASTER), storage=storage, config=config, location="usb:/repo")
    plain = SimpleNamespace(sealer=None, storage=storage, config=config, location="usb:/plain")
    with pytest.raises(UsageError, match="^usb:/plain is not encrypted: it has no keys$"):
        add_key(plain, "second passphrase", CHEAP, "")
    with pytest.raises(UsageError, match="^usb:/plain is not encrypted: it has no keys$"):
        remove_key(plain, key_id)
    with pytest.raises(RefusedError) as err:
        remove_key(repo, key_id)
    assert str(err.value) == "not removing the repository's only key: add another first (lifeboat key add)"
    second = add_key(repo, "second passphrase", CHEAP, "now")
    assert Unlock(passphrase="second passphrase").master_key(storage, config) == (MASTER, second)
    for bad in ["", "zz"]:
        with pytest.raises(UsageError) as err:
            remove_key(repo, bad)
        assert str(err.value) == f"no key {bad!r} in usb:/repo (see: lifeboat key list)"
    common = next((n for n in range(1, 16) if key_id[:n] != second[:n]), 16) - 1
    if common:
        with pytest.raises(UsageError, match="is ambiguous: give more of its id$"):
            remove_key(repo, key_id[:common])
    remove_key(repo, key_id[:common + 1].upper())
    assert [k.id for k in key_objects(storage)] == [second]


def test_key_ids_that_share_a_prefix_are_ambiguous_and_messages_name_the_file_kind(storage, tmp_path, monkeypatch):
    from recovery.repo.sealing import Sealer

    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV, raising=False)
    key_id, config = _repo(storage, tmp_path)
    raw = storage.read(key_name(key_id))
    for twin in ("aa11000000000000", "aa22000000000000"):      # listed by id; their wrap is not opened
        storage.write(key_name(twin), raw.replace(key_id.encode(), twin.encode()))
    repo = SimpleNamespace(sealer=Sealer(MASTER), storage=storage, config=config, location="usb:/repo")
    with pytest.raises(UsageError) as err:
        remove_key(repo, "aa")
    assert str(err.value) == "key 'aa' is ambiguous: give more of its id"
    remove_key(repo, "aa1")
    assert sorted(k.id for k in key_objects(storage)) == sorted([key_id, "aa22000000000000"])
    missing = str(tmp_path / "missing")
    for unlock, what in [(Unlock(recovery_code_file=missing), "recovery code"), (Unlock(passphrase_file=missing), "passphrase")]:
        with pytest.raises(UsageError) as err:
            unlock.master_key(storage, config)
        assert str(err.value) == f"the {what} file {missing} does not exist"
    with pytest.raises(UsageError) as err:
        new_passphrase(None, missing)
    assert str(err.value) == f"the passphrase file {missing} does not exist"


def test_only_a_key_holding_this_repositorys_master_key_unlocks_it(storage, tmp_path):
    _, config = _repo(storage, tmp_path)
    other_id, raw = new_key_object(bytes(32), "second passphrase", REPO_ID, CHEAP, "")
    storage.write(key_name(other_id), raw)
    with pytest.raises(WrongPassphraseError, match="^wrong passphrase"):
        Unlock(passphrase="second passphrase").master_key(storage, config)
    # a configuration without an id: keys are bound to the empty id
    bare_id, raw = new_key_object(MASTER, "third passphrase", "", CHEAP, "")
    storage.write(key_name(bare_id), raw)
    bare = {"encryption": config["encryption"]}
    assert Unlock(passphrase="third passphrase").master_key(storage, bare) == (MASTER, bare_id)


def test_a_fresh_program_that_set_no_way_to_ask_refuses_plainly():
    # The module as imported, before any command line set `ask_passphrase` (other tests here
    # change it): a new program, so nothing set it. Without a question to ask, a new
    # passphrase is refused in words, not with a TypeError.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(keys.__file__).resolve().parents[2]
    program = ("from recovery.errors import UsageError\n"
               "from recovery.repo import keys\n"
               "try:\n"
               "    keys.new_passphrase(None, None)\n"
               "except UsageError as exc:\n"
               "    print(exc)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOAT_")}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                         env={**env, "PYTHONPATH": str(root)}, cwd=root)
    assert (out.returncode, out.stdout) == (0, "give the passphrase with --passphrase-file FILE or "
                                               "LIFEBOAT_PASSPHRASE_FILE=FILE (or run on a terminal to be asked)\n")


# -- the derivation begun early (start_early) and the one on a background thread (PendingKey) --

def _early_repo(tmp_path, storage, monkeypatch, passphrase="first passphrase"):
    """A repository folder with one key object, and LIFEBOAT_PASSPHRASE_FILE naming its passphrase."""
    key_id, config = _repo(storage, tmp_path)
    pf = tmp_path / "pass"
    pf.write_text(passphrase + "\n")
    monkeypatch.setenv(keys.PASSPHRASE_ENV, str(pf))
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV, raising=False)
    monkeypatch.setattr(keys, "_early", {})
    return key_id, config


def test_an_early_start_derives_the_first_keys_hash_once_for_the_unlock_that_follows(storage, tmp_path, monkeypatch):
    key_id, config = _early_repo(tmp_path, storage, monkeypatch)
    keys.start_early(str(tmp_path))
    key = KeyObject.parse("k", storage.read(key_name(key_id)))
    (found, early), = keys._early.items()
    assert found == (b"first passphrase", key.salt, key.kdf)
    early.join(30)
    assert early.key == keys._argon2id(b"first passphrase", key.salt, CHEAP)
    calls = []
    real = keys._argon2id
    monkeypatch.setattr(keys, "_argon2id", lambda *a: calls.append(a) or real(*a))
    assert Unlock(terminal=False).master_key(storage, config) == (MASTER, key_id)
    assert calls == [] and keys._early == {}                # the early hash was used, and taken
    assert Unlock(terminal=False).master_key(storage, config) == (MASTER, key_id)
    assert len(calls) == 1                                  # taken once: the next unlock derives its own


def test_an_early_start_that_failed_is_derived_again_by_the_unlock(storage, tmp_path, monkeypatch):
    key_id, config = _early_repo(tmp_path, storage, monkeypatch)
    real = keys._argon2id

    def broken(*a):
        raise MemoryError("no room for Argon2's memory")
    monkeypatch.setattr(keys, "_argon2id", broken)
    keys.start_early(str(tmp_path))
    (early,) = keys._early.values()
    early.join(30)
    assert early.key is None
    monkeypatch.setattr(keys, "_argon2id", real)
    assert Unlock(terminal=False).master_key(storage, config) == (MASTER, key_id)
    assert keys._early == {}


def test_an_early_start_is_left_alone_without_a_folder_a_key_or_a_readable_passphrase(storage, tmp_path, monkeypatch):
    _early_repo(tmp_path, storage, monkeypatch)
    for where in (None, "", str(tmp_path / "missing"), str(tmp_path / "tmp")):   # no folder, no keys/
        keys.start_early(where)
    monkeypatch.setenv(keys.RECOVERY_CODE_ENV, str(tmp_path / "code"))            # a recovery code wins
    keys.start_early(str(tmp_path))
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, str(tmp_path / "missing"))          # unreadable: the unlock says so
    keys.start_early(str(tmp_path))
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    keys.start_early(str(tmp_path))
    assert keys._early == {}


def test_a_derivation_in_the_background_counts_its_time_and_the_wait_for_it(storage, tmp_path, monkeypatch):
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV, raising=False)
    key_id, config = _repo(storage, tmp_path)
    gate = threading.Event()
    real = keys._try_keys

    def held(*args):                 # the derivation ends only when the gate opens
        gate.wait(30)
        return real(*args)
    monkeypatch.setattr(keys, "_try_keys", held)
    began = time.monotonic()
    pending = Unlock(passphrase="first passphrase").begin(storage, config)
    threading.Timer(0.3, gate.set).start()
    assert pending.result() == (MASTER, key_id)
    took = time.monotonic() - began
    assert 0.25 <= pending.waited <= pending.seconds + 0.05 and pending.seconds <= took
    waited = pending.waited
    assert pending.result() == (MASTER, key_id) and pending.waited == waited   # asked again: no new wait
    # a derivation that ended before anyone asked was not waited for
    pending = Unlock(passphrase="first passphrase").begin(storage, config)
    pending._thread.join(30)
    assert pending.result() == (MASTER, key_id) and 0 <= pending.waited < 0.25 and pending.seconds > 0
    with pytest.raises(WrongPassphraseError):
        Unlock(passphrase="other passphrase").begin(storage, config).result()


def test_a_key_known_at_once_took_no_time_and_one_asked_for_took_what_it_waited(storage, tmp_path, monkeypatch):
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(keys.RECOVERY_CODE_ENV, raising=False)
    _, config = _repo(storage, tmp_path)
    code = tmp_path / "code"
    code.write_text(recovery_code(MASTER))
    pending = Unlock(recovery_code_file=str(code)).begin(storage, config)
    assert pending.result() == (MASTER, None) == pending.result()
    assert (pending.seconds, pending.waited) == (0.0, 0.0)
    # a passphrase typed on the terminal is derived in this thread: its time, all of it waited
    began = time.monotonic()
    pending = Unlock(ask=lambda prompt: "first passphrase").begin(storage, config)
    took = time.monotonic() - began
    assert pending.result()[0] == MASTER and 0 < pending.seconds == pending.waited <= took


def test_a_program_ends_without_waiting_for_a_derivation_it_began(tmp_path):
    # Both derivations (start_early's and the unlock's) held for ever: a command that fails
    # before it needs the key must still end.
    import os
    import subprocess
    import sys
    from pathlib import Path

    key_id, raw = new_key_object(MASTER, "first passphrase", REPO_ID, CHEAP, "")
    for folder in ("keys", "tmp"):
        (tmp_path / "r" / folder).mkdir(parents=True)
    (tmp_path / "r" / key_name(key_id)).write_bytes(raw)
    (tmp_path / "pass").write_text("first passphrase\n")
    root = Path(keys.__file__).resolve().parents[2]
    # signal.alarm: a program left waiting (a mutant's thread) ends by itself even when pytest,
    # which would kill it at the timeout, was ended first.
    program = ("import signal, sys, threading\n"
               "signal.alarm(120)\n"
               "from recovery.repo import keys\n"
               "from recovery.repo.sealing import key_check\n"
               "from recovery.storage.local import LocalStorage\n"
               "never = threading.Event()\n"
               "keys._argon2id = lambda *a: never.wait()\n"
               "keys._try_keys = lambda *a: never.wait()\n"
               "keys.start_early(sys.argv[1])\n"
               "assert len(keys._early) == 1\n"
               "with LocalStorage(sys.argv[1]) as s:\n"
               "    keys.Unlock(passphrase='x').begin(s, {'encryption': {'key_check': key_check(bytes(32))}})\n"
               "print('ended')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOAT_")}
    env.update(PYTHONPATH=str(root), LIFEBOAT_PASSPHRASE_FILE=str(tmp_path / "pass"))
    out = subprocess.run([sys.executable, "-c", program, str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=60, env=env, cwd=root)
    assert (out.returncode, out.stdout) == (0, "ended\n"), out.stderr
