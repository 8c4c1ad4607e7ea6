"""A repository is not made on a read-only filesystem (a read-only bind mount of a folder this
test made): refused with the reason, and with --force it fails in one line, writing nothing."""

from __future__ import annotations

import pytest

from recovery.errors import RefusedError, RepositoryError
from recovery.repo.repository import Repository, placement_problem
from tests.conftest import run

pytestmark = pytest.mark.loop


@pytest.fixture
def read_only(tmp_path):
    source, view = tmp_path / "source", tmp_path / "view"
    source.mkdir()
    view.mkdir()
    run("mount", "--bind", source, view)
    try:
        run("mount", "-o", "remount,bind,ro", view)
        yield view
    finally:
        run("umount", view)


def test_a_read_only_filesystem_is_refused_unless_forced(read_only):
    assert placement_problem(read_only / "r") == f"{read_only} is on a read-only filesystem"
    assert placement_problem(read_only) == f"{read_only} is on a read-only filesystem"
    with pytest.raises(RefusedError) as err:
        Repository.init(read_only / "r")
    assert str(err.value) == (f"not creating a repository at {read_only / 'r'}: {read_only} is on a read-only "
                              "filesystem; choose a folder on a disk, or add --force to create it there anyway")
    with pytest.raises(RepositoryError) as err:
        Repository.init(read_only / "r", force=True)
    assert str(err.value).startswith(f"cannot create a repository: no permission to write to {read_only / 'r'} "
                                     "(Read-only file system): ")
    assert not any(read_only.iterdir())
