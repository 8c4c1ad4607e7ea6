"""pytest plugin for the mutation run: mutmut 2 counts only exit code 1 as a killed mutant, and
a mutant that breaks an import makes pytest exit 2 (collection error). Both mean the tests
caught the mutant."""


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 2:
        session.exitstatus = 1
