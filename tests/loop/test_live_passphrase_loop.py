"""The live system reads an encrypted repository's passphrase from a file on a labelled
filesystem (lifeboat.passphrase=LABEL=NAME:/file), a real ext4 image on a loop device."""

from __future__ import annotations

import secrets

import pytest

from recovery import live
from recovery.errors import RefusedError, WrongPassphraseError
from recovery.repo.repository import NewEncryption, Repository
from recovery.repo.keys import KdfParams
from tests import fsimages as fi

pytestmark = pytest.mark.loop
PASSPHRASE = "the keys are on the blue stick"
FAST = KdfParams(memory_kib=8 * 1024, iterations=1, parallelism=1)


def keys_stick(tmp_path, loops, text: str) -> str:
    """A small ext4 filesystem labelled uniquely, holding lifeboat/pass.txt; its label."""
    tree = tmp_path / "stick"
    (tree / "lifeboat").mkdir(parents=True)
    (tree / "lifeboat" / "pass.txt").write_text(text + "\n")
    label = "LBK" + secrets.token_hex(4)
    loops.attach(fi.make_ext4(tmp_path / "stick.img", 8 * 1024 * 1024, tree, label=label))
    return label


def test_the_passphrase_file_on_a_labelled_stick_unlocks_the_repository(tmp_path, loops, monkeypatch):
    monkeypatch.setattr(live, "RUN_DIR", tmp_path / "run")
    label = keys_stick(tmp_path, loops, PASSPHRASE)
    Repository.init(tmp_path / "repo", encryption=NewEncryption(PASSPHRASE, FAST)).close()
    req = live.parse_request(f"quiet lifeboat.repo=/dev/null:/x lifeboat.target=/dev/sda "
                             f"lifeboat.passphrase=LABEL={label}:/lifeboat/pass.txt")
    assert req.passphrase == live.RepoLocator("label", label, "/lifeboat/pass.txt")
    unlock = live.unlock_for(req)
    repo = Repository.open(tmp_path / "repo", unlock)
    assert repo.sealer is not None and repo.snapshots() == []
    repo.close()
    # mounted read-only only while reading: nothing is left mounted
    assert not any(str(tmp_path / "run") in line for line in open("/proc/mounts"))

    missing = live.parse_request(f"lifeboat.repo=/dev/null:/x lifeboat.target=/dev/sda "
                                 f"lifeboat.passphrase=LABEL={label}:/lifeboat/other.txt")
    with pytest.raises(RefusedError, match="the passphrase file /lifeboat/other.txt is not on"):
        live.unlock_for(missing)


def test_a_wrong_passphrase_on_the_stick_is_one_plain_error(tmp_path, loops, monkeypatch):
    monkeypatch.setattr(live, "RUN_DIR", tmp_path / "run")
    label = keys_stick(tmp_path, loops, "an old passphrase")
    Repository.init(tmp_path / "repo", encryption=NewEncryption(PASSPHRASE, FAST)).close()
    req = live.parse_request(f"lifeboat.repo=/dev/null:/x lifeboat.target=/dev/sda "
                             f"lifeboat.passphrase=LABEL={label}:/lifeboat/pass.txt")
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        Repository.open(tmp_path / "repo", live.unlock_for(req))
