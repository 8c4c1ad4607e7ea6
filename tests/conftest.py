"""Shared fixtures. Tests create every disk they touch (image files under tmp_path, and loop
devices attached to those files); nothing here ever opens a device it did not create."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import own_mounts

ROOT = Path(__file__).resolve().parent.parent

# A suite started in the background by a non-interactive shell (CI runners, `nohup ... &`)
# inherits Ctrl-C ignored, and an ignored signal stays ignored across exec: every lifeboat
# the tests start would then shrug off the SIGINT the Ctrl-C tests send. Tests play a person
# at a terminal, where Ctrl-C is live: with a handler here (not SIG_IGN), each child execs
# with the default disposition again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# On CI (CI=true, set by .ci/run) every tool a tier needs is installed, so a skip can only
# mean a broken set-up: it fails the run, unless its reason is listed here with why it may
# legitimately happen on a CI machine too. Keep this list short.
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ALLOWED_SKIPS: dict[str, str] = {
    # test_probe_mounts: a CI machine may run inside a container whose / is an overlay.
    "the root filesystem is not on a block device here":
        "containers and overlay roots have no disk under /",
    # test_usbstick: the live system's medium mount point is taken on a machine that booted Lifeboat.
    "/run/lifeboat/medium is in use on this machine":
        "only on a machine running the live system itself",
}


def require(condition: bool, reason: str) -> None:
    """Skip the test when `condition` is false, or fail it on CI: a missing tool there is a
    broken set-up, not a reason to pass."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"CI=true and this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _allowed(reason: str) -> str | None:
    return next((why for text, why in ALLOWED_SKIPS.items() if text in reason), None)


def pytest_runtest_setup(item):
    if "loop" in item.keywords:
        require(os.geteuid() == 0, "needs root for loop devices")
    if "vm" in item.keywords:
        require(shutil.which("qemu-system-x86_64") is not None, "needs qemu-system-x86_64")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI a skip not on ALLOWED_SKIPS becomes a failure, whichever way it was made
    (pytest.skip, a skip or skipif mark, importorskip)."""
    outcome = yield
    report = outcome.get_result()
    if not (ON_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if _allowed(reason) is None:
        report.outcome = "failed"
        report.longrepr = (f"CI=true: skipped tests fail the run unless tests/conftest.py ALLOWED_SKIPS "
                           f"lists their reason. This one: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Every skip, counted and named, so a run that quietly skipped a tier shows it; before it,
    the tests that cost the most CPU."""
    skipped = terminalreporter.stats.get("skipped", [])
    tr = terminalreporter
    _cpu_summary(tr)
    tr.section("skip summary")
    if not skipped:
        tr.write_line("no test was skipped")
        return
    for rep in skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        why = _allowed(reason)
        tag = f"allowed on CI: {why}" if why else "NOT allowed on CI"
        tr.write_line(f"SKIPPED {rep.nodeid}: {reason}  [{tag}]")
    tr.write_line(f"{len(skipped)} skipped ({'CI=true' if ON_CI else 'not on CI: skips do not fail the run'})")


@pytest.fixture(scope="session", autouse=True)
def own_temp_dir(tmp_path_factory):
    """The product's temporary folders (browse views' mount points, virtual-disk exports) go
    under this run's base folder, so a test counting what is left mounted sees only its own
    run's mounts when another run shares the machine."""
    base = tmp_path_factory.getbasetemp()
    temp = tmp_path_factory.mktemp("tmp", numbered=False)
    saved = {key: os.environ.get(key) for key in ("TMPDIR", "LIFEBOAT_LOG_DIR", "LIFEBOAT_CACHE_DIR")}
    saved_tempdir = tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(temp)
    # The CLI run by module and session fixtures (before hermetic_env gives each test its own
    # folders), and by the ISO build's self-test, logs and caches here too, not in root's
    # /var/log/lifeboat and /var/cache/lifeboat.
    os.environ["LIFEBOAT_LOG_DIR"] = str(tmp_path_factory.mktemp("fixture-logs", numbered=False))
    os.environ["LIFEBOAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("fixture-cache", numbered=False))
    own_mounts.set_base(base)
    yield temp
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = saved_tempdir
    # Nothing the run mounted may outlive it: a dead FUSE mount left in the base folder stops
    # the next run with the same folder before its first test. Each is named (a failure of the
    # run) and unmounted lazily.
    left = own_mounts.mounts()
    for target in sorted(left, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    assert not left, f"the run left these mounted: {left}"


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path):
    """Small packs so small test data walks the multi-pack paths; no user config leaks in; the
    logs and the index cache of each test stay in its own folder."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(4 * 1024 * 1024))
    monkeypatch.setenv("LIFEBOAT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "index-cache"))
    monkeypatch.delenv("LIFEBOAT_REPO", raising=False)
    monkeypatch.delenv("LIFEBOAT_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("LIFEBOAT_RECOVERY_CODE_FILE", raising=False)


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    """Run a tool, failing the test with its stderr when it fails."""
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run([str(c) for c in cmd], **kw)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{cmd} failed: {exc.stderr}") from exc


class LoopDevices:
    """Attaches image files that this test session made under pytest's temporary folder;
    detaches them all after."""

    def __init__(self, base: Path):
        self.tmp_path = base.resolve()
        self.attached: list[str] = []

    def attach(self, image: Path, sector_size: int = 512, read_only: bool = False) -> str:
        image = Path(image).resolve()
        if self.tmp_path not in image.parents:
            raise AssertionError(f"refusing to attach {image}: not made by this test")
        cmd = ["losetup", "--find", "--show"]
        if sector_size != 512:
            cmd += ["-b", str(sector_size)]
        if read_only:
            cmd.append("--read-only")
        dev = run(*cmd, image).stdout.strip()
        self.attached.append(dev)
        # No udev here: the kernel makes partition nodes only when asked. Nodes partx added
        # outlive `losetup -d` (partition scanning is off), so a device handed out again can
        # still carry another image's partitions, on which `partx -a` fails: those go first.
        subprocess.run(["partx", "-d", dev], capture_output=True)
        subprocess.run(["partx", "-a", dev], capture_output=True)
        return dev

    def detach_all(self) -> None:
        for dev in reversed(self.attached):
            subprocess.run(["partx", "-d", dev], capture_output=True)
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.attached.clear()


@pytest.fixture
def loops(tmp_path_factory):
    require(os.geteuid() == 0, "needs root for loop devices")
    devices = LoopDevices(tmp_path_factory.getbasetemp())
    yield devices
    devices.detach_all()


# CPU seconds each test cost: its own, its fixtures' set-up, and every child it waited for (the
# CLI, mkfs, QEMU). The run's budget is CPU as well as wall time: on 2 cores, lanes running at
# once end no sooner than the CPU they need allows.
_CPU_BY_TEST: dict[str, float] = {}


def _cpu_now() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = _cpu_now()
    yield
    _CPU_BY_TEST[item.nodeid] = _cpu_now() - start


def _cpu_summary(tr) -> None:
    if not _CPU_BY_TEST:
        return
    tr.section("CPU seconds by test (its own and its children's), the 15 dearest")
    for nodeid, cpu in sorted(_CPU_BY_TEST.items(), key=lambda kv: -kv[1])[:15]:
        tr.write_line(f"{cpu:8.1f}  {nodeid}")
    tr.write_line(f"{sum(_CPU_BY_TEST.values()):8.1f}  all {len(_CPU_BY_TEST)} tests")
    by_file: dict[str, float] = {}
    for nodeid, cpu in _CPU_BY_TEST.items():
        name = nodeid.split("::")[0]
        by_file[name] = by_file.get(name, 0.0) + cpu
    tr.section("CPU seconds by test file, the 15 dearest")
    for name, cpu in sorted(by_file.items(), key=lambda kv: -kv[1])[:15]:
        tr.write_line(f"{cpu:8.1f}  {name}")
    # Every test's figure, for planning where the suite's time goes (scripts/test names a file per lane).
    listing = os.environ.get("LIFEBOAT_CPU_FILE")
    if listing:
        with open(listing, "w") as f:
            f.writelines(f"{cpu:.2f}\t{nodeid}\n" for nodeid, cpu in sorted(_CPU_BY_TEST.items(), key=lambda kv: -kv[1]))
