"""pytest plugin for the mutation run: mutmut 2 counts only exit code 1 as a killed mutant.
A mutant that breaks an import makes pytest exit 2 (a collection error) or, when the import
is one tests/conftest.py makes, 4 (pytest stops while loading that conftest, before any
session). Every one of these means the tests caught the mutant, so each ends in 1."""

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    outcome = yield
    if outcome.excinfo is not None:
        print(f"mutexit: a conftest failed to load: {outcome.excinfo[1]!r}", flush=True)
        os._exit(1)


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 2:
        session.exitstatus = 1
