"""The `lifeboat` command line. One main() maps every failure to one plain line and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager

from recovery import __version__
from recovery.errors import Cancelled, DiskError, LifeboatError, RefusedError, UsageError
from recovery.events import CancelToken, Progress, Warning_
from recovery.repo.keys import DEFAULT_ITERATIONS, DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM
from recovery.units import human_duration, human_size

log = logging.getLogger("recovery.cli")
PARTIAL_EXIT = 9     # restore --salvage finished, but damaged ranges were written as zeros


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifeboat", description="Back up and restore whole PCs.")
    p.add_argument("--version", action="version", version=f"lifeboat {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def location_args(sp):
        sp.add_argument("--s3-endpoint", metavar="URL",
                        help="an S3-compatible server for s3:// locations, e.g. https://minio.lan:9000 "
                             "(or set LIFEBOAT_S3_ENDPOINT; default AWS)")
        sp.add_argument("--s3-region", help="the S3 region (or set LIFEBOAT_S3_REGION)")
        sp.add_argument("--s3-path-style", action="store_true", default=None,
                        help="address buckets as URL/bucket/key (what most self-hosted stores serve; "
                             "or set LIFEBOAT_S3_PATH_STYLE=1)")
        sp.add_argument("--s3-virtual-host", action="store_true", default=None,
                        help="address buckets as bucket.HOST/key, AWS's way, also at another endpoint "
                             "(or set LIFEBOAT_S3_VIRTUAL_HOST=1)")

    def prune_args(sp):
        sp.add_argument("--repack-threshold", type=int, default=80, metavar="PCT",
                        help="repack a pack when less than PCT %% of it is still used (default 80)")
        sp.add_argument("--wait", type=float, default=300, metavar="SECONDS",
                        help="how long to wait for running backups before deleting (default 300)")

    def repo_arg(sp, required=True):
        sp.add_argument("--repo", default=os.environ.get("LIFEBOAT_REPO"), required=required and not os.environ.get("LIFEBOAT_REPO"),
                        help="the repository: a folder, or s3://bucket/prefix, sftp://user@host/path, "
                             "smb://[domain;]user@host/share/path, nfs://host/export/path (or set LIFEBOAT_REPO)")
        location_args(sp)
        unlock_args(sp)

    def unlock_args(sp):
        sp.add_argument("--passphrase-file", metavar="FILE",
                        help="an encrypted repository's passphrase: the first line of FILE "
                             "(or set LIFEBOAT_PASSPHRASE_FILE; on a terminal it is asked)")
        sp.add_argument("--recovery-code-file", metavar="FILE",
                        help="unlock an encrypted repository with its recovery code, kept in FILE "
                             "(or set LIFEBOAT_RECOVERY_CODE_FILE)")

    def kdf_args(sp):
        sp.add_argument("--kdf-memory", type=int, metavar="MiB", default=DEFAULT_MEMORY_KIB // 1024,
                        help=f"Argon2id memory for the passphrase's key (default {DEFAULT_MEMORY_KIB // 1024} MiB)")
        sp.add_argument("--kdf-iterations", type=int, metavar="N", default=DEFAULT_ITERATIONS,
                        help=f"Argon2id passes (default {DEFAULT_ITERATIONS})")
        sp.add_argument("--kdf-parallelism", type=int, metavar="N", default=DEFAULT_PARALLELISM,
                        help=f"Argon2id lanes (default {DEFAULT_PARALLELISM})")

    d = sub.add_parser("disks", help="list whole disks")
    d.add_argument("--json", action="store_true")
    d.add_argument("--record", action="store_true",
                   help="print everything the disk listing reads on this machine, as JSON (for a bug report)")

    r = sub.add_parser("repo", help="manage repositories")
    rsub = r.add_subparsers(dest="repo_command", metavar="ACTION")
    ri = rsub.add_parser("init", help="create a new repository")
    ri.add_argument("path", help="a folder or a location (see --repo)")
    location_args(ri)
    ri.add_argument("--chunk-size", type=int, default=1024 * 1024, help="bytes per chunk (default 1 MiB)")
    ri.add_argument("--force", action="store_true",
                    help="create it even on a read-only or in-memory (tmpfs) filesystem")
    ri.add_argument("--encrypt", action="store_true",
                    help="encrypt everything stored; asks for a passphrase twice (or --passphrase-file) "
                         "and prints a recovery code once")
    ri.add_argument("--passphrase-file", metavar="FILE",
                    help="with --encrypt: the passphrase is the first line of FILE (or set LIFEBOAT_PASSPHRASE_FILE)")
    kdf_args(ri)
    ri.add_argument("--format", type=int, choices=(1, 2), default=2, dest="format_version",
                    help="repository format: 2 (default, with parity that repairs damage) or 1 "
                         "(readable by older Lifeboat)")
    ri.add_argument("--json", action="store_true")
    ru = rsub.add_parser("upgrade", help="convert a format 1 repository to format 2 in place (adds parity)")
    repo_arg(ru)
    ru.add_argument("--json", action="store_true")

    k = sub.add_parser("key", help="the passphrases of an encrypted repository")
    ksub = k.add_subparsers(dest="key_command", metavar="ACTION")
    kl = ksub.add_parser("list", help="list the repository's keys")
    ka = ksub.add_parser("add", help="let one more passphrase open the repository")
    kc = ksub.add_parser("change", help="replace the passphrase used to unlock by a new one")
    kr = ksub.add_parser("remove", help="remove a key (never the last)")
    kr.add_argument("key_id", help="the key's id (or its first digits), from key list")
    for sp in (kl, ka, kc, kr):
        repo_arg(sp)
        sp.add_argument("--json", action="store_true")
    for sp in (ka, kc):
        sp.add_argument("--new-passphrase-file", metavar="FILE",
                        help="the new passphrase is the first line of FILE (else it is asked twice)")
        kdf_args(sp)

    b = sub.add_parser("backup", help="back up a whole disk or disk-image file")
    b.add_argument("disk")
    repo_arg(b)
    b.add_argument("--name", help="machine name (default: from the disk's model and serial)")
    b.add_argument("--no-verify", action="store_true", help="skip reading back what was written")
    b.add_argument("--zstd-level", type=int, default=3, help="zstd compression level (default 3)")
    b.add_argument("--threads", type=int, help="compress on this many threads (default: one per core)")
    b.add_argument("--json", action="store_true")

    s = sub.add_parser("snapshots", help="list snapshots")
    repo_arg(s)
    s.add_argument("--name")
    s.add_argument("--json", action="store_true")

    fg = sub.add_parser("forget", help="remove snapshots a retention policy does not keep")
    repo_arg(fg)
    fg.add_argument("--name", help="only this machine's snapshots (default: every machine, each on its own)")
    for rule, what in (("last", "the N newest snapshots"), ("daily", "the newest snapshot of each of the last N days"),
                       ("weekly", "... of the last N weeks"), ("monthly", "... of the last N months"),
                       ("yearly", "... of the last N years")):
        fg.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=f"keep {what}")
    fg.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    fg.add_argument("--prune", action="store_true", help="then prune: delete the data no snapshot uses any more")
    prune_args(fg)
    fg.add_argument("--json", action="store_true")

    pr = sub.add_parser("prune", help="delete the data no snapshot uses any more")
    repo_arg(pr)
    prune_args(pr)
    pr.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    pr.add_argument("--json", action="store_true")

    v = sub.add_parser("verify", help="check every chunk of one or all snapshots")
    v.add_argument("snapshot", nargs="?")
    repo_arg(v)
    v.add_argument("--name")
    v.add_argument("--repair", action="store_true",
                   help="write files repaired from their parity back to the repository")
    v.add_argument("--json", action="store_true")

    rs = sub.add_parser("restore", help="restore a snapshot, or an image another tool made, onto a disk "
                                        "or disk-image file")
    rs.add_argument("snapshot", help="a snapshot id or 'latest' (with --repo), or the path of a foreign image: "
                                     "a VHD, VHDX, qcow2, VMDK, raw .img/.dd/.raw (plain, .gz, .zst, .xz), ...")
    rs.add_argument("target")
    repo_arg(rs, required=False)
    rs.add_argument("--name")
    rs.add_argument("--layout", choices=["keep", "grow", "proportional"], default="grow")
    rs.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rs.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    rs.add_argument("--salvage", action="store_true",
                    help="restore a damaged snapshot anyway: damaged ranges become zeros, the files hit are listed")
    rs.add_argument("--json", action="store_true")

    ins = sub.add_parser("inspect", help="say what a foreign image holds and whether it is intact")
    ins.add_argument("image", help="the image file or folder")
    ins.add_argument("--json", action="store_true")

    im = sub.add_parser("import", help="store a foreign image as a snapshot in a repository")
    im.add_argument("image", help="the image file or folder")
    repo_arg(im)
    im.add_argument("--name", help="machine name (default: the image's name)")
    im.add_argument("--no-verify", action="store_true", help="skip reading back what was written")
    im.add_argument("--json", action="store_true")

    w = sub.add_parser("write-usb", help="write the Lifeboat ISO to a USB stick (and keep backups on it)")
    w.add_argument("iso", nargs="?", help="the ISO image (default build/lifeboat.iso)")
    w.add_argument("device", nargs="?", help="the stick, e.g. /dev/sdb (default: pick from a list)")
    w.add_argument("--data", choices=["exfat", "ext4"], help="after the image, a partition for backups")
    w.add_argument("--force", action="store_true", help="allow a disk that is not a removable USB stick")
    w.add_argument("--yes", action="store_true", help="do not ask for the device's name")
    w.add_argument("--json", action="store_true")

    from recovery.browse.parsers import add_parsers as browse_parsers
    browse_parsers(sub, repo_arg)      # mount, umount, ls, get

    t = sub.add_parser("tui", help="the full-screen recovery interface")
    repo_arg(t, required=False)
    t.add_argument("--disk", action="append", default=[], help="also offer this disk-image file")
    return p


@contextmanager
def progress_display(enabled: bool):
    """A rich progress bar on a terminal; silence otherwise. Yields an event sink."""
    if not enabled:
        yield lambda event: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    console = Console(stderr=True)
    with Bar(TextColumn("{task.description:<18}"), BarColumn(), DownloadColumn(binary_units=True),
             TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def sink(event):
            if isinstance(event, Warning_):
                console.print(f"[yellow]warning:[/] {event.message}")
            elif isinstance(event, Progress):
                label = event.phase + (f" part {event.partition}" if event.partition else "")
                if event.phase not in tasks:
                    tasks[event.phase] = bar.add_task(label, total=event.total or None)
                bar.update(tasks[event.phase], completed=event.done, total=event.total or None, description=label)

        yield sink


def progress_for(args):
    """Progress bars on a terminal, unless the output is --json."""
    return progress_display(sys.stderr.isatty() and not getattr(args, "json", False))


def emit(args, data: dict, human: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        for line in human:
            print(line)


def cmd_disks(args) -> int:
    from recovery.probe.disks import list_disks

    if args.record:
        from recovery.probe.record import machine_record
        print(json.dumps(machine_record(), indent=1, sort_keys=True))
        return 0
    disks = list_disks()
    lines = []
    for d in disks:
        marks = [m for m, on in (("system", d.is_system), ("removable", d.removable), ("read-only", d.read_only)) if on]
        lines.append(f"{d.path:<16} {human_size(d.size):>10}  {d.transport or '-':<7} "
                     f"{(d.model or '-')[:28]:<28} {d.serial or ''} {' '.join(f'[{m}]' for m in marks)}")
        if d.incomplete_restore:
            lines.append(f"      {d.incomplete_restore}: NOT USABLE; run that restore again to resume it")
        for p in d.partitions:
            mp = ",".join(p.mountpoints)
            lines.append(f"  {p.number:>3} {human_size(p.size):>10}  {p.fs or '-':<6} {p.label or '':<16} {mp}")
    emit(args, {"disks": [d.to_json() for d in disks]}, lines or ["no disks found"])
    return 0


def cmd_repo(args) -> int:
    from recovery.repo.repository import Repository

    if args.repo_command == "upgrade":
        return cmd_repo_upgrade(args)
    if args.repo_command != "init":
        raise UsageError("usage: lifeboat repo init PATH | lifeboat repo upgrade --repo R")
    encryption = None
    if args.encrypt and args.format_version < 2:
        raise UsageError("an encrypted repository is format 2: --encrypt does not go with --format 1")
    if args.encrypt:
        from recovery.repo.keys import PASSPHRASE_ENV, new_passphrase
        from recovery.repo.repository import NewEncryption

        kdf = kdf_params(args)
        kdf.check()
        passphrase = new_passphrase(None, args.passphrase_file or os.environ.get(PASSPHRASE_ENV))
        encryption = NewEncryption(passphrase, kdf)
    elif args.passphrase_file:
        raise UsageError("--passphrase-file makes sense with --encrypt only")
    repo = Repository.init(args.path, chunk_size=args.chunk_size, force=args.force, encryption=encryption,
                           version=args.format_version)
    data = {"repository": repo.location, "id": repo.config["id"], "encrypted": repo.encrypted}
    lines = [f"created {'encrypted ' if repo.encrypted else ''}repository {repo.location}"]
    if repo.recovery_code:
        data["recovery_code"] = repo.recovery_code
        data["key"] = repo.key_id
        lines += ["", "Recovery code (shown only this once):", "", f"    {repo.recovery_code}", "",
                  "It opens the repository if the passphrase is forgotten. Print it or write it down now,",
                  "and keep it apart from the backups (not on the same drive, not in the same bag).",
                  "Use it with --recovery-code-file FILE; then 'lifeboat key add' sets a new passphrase."]
    emit(args, data, lines)
    return 0


def kdf_params(args):
    from recovery.repo.keys import KdfParams

    return KdfParams(memory_kib=args.kdf_memory * 1024, iterations=args.kdf_iterations,
                     parallelism=args.kdf_parallelism)


def cmd_key(args) -> int:
    from recovery.repo import keys
    from recovery.repo.repository import Repository, now_iso

    if not args.key_command:
        raise UsageError("usage: lifeboat key list|add|change|remove --repo REPO")
    if args.key_command in ("add", "change"):
        kdf_params(args).check()          # a mistyped figure is refused before anything is asked
    repo = Repository.open(args.repo)
    try:
        if not repo.encrypted:
            raise UsageError(f"{repo.location} is not encrypted: it has no keys")
        if args.key_command == "list":
            found = keys.key_objects(repo.storage)
            emit(args, {"keys": [{"id": k.id, "created": k.created, "in_use": k.id == repo.key_id,
                                  "memory_kib": k.kdf.memory_kib, "iterations": k.kdf.iterations,
                                  "parallelism": k.kdf.parallelism} for k in found]},
                 [f"{k.id}  {k.created}  argon2id {k.kdf.memory_kib // 1024} MiB x{k.kdf.iterations} "
                  f"p{k.kdf.parallelism}{'  (unlocked this time)' if k.id == repo.key_id else ''}" for k in found])
            return 0
        if args.key_command == "remove":
            keys.remove_key(repo, args.key_id)
            emit(args, {"removed": args.key_id}, [f"removed key {args.key_id}"])
            return 0
        if args.key_command == "change" and repo.key_id is None:
            raise UsageError("unlocked with the recovery code: there is no passphrase to change; "
                             "use 'lifeboat key add' to set one")
        passphrase = keys.new_passphrase(None, args.new_passphrase_file)
        new_id = keys.add_key(repo, passphrase, kdf_params(args), now_iso())
        if args.key_command == "change":
            # The new key is stored before the old one goes: a crash leaves both working.
            repo.storage.delete(keys.key_name(repo.key_id))
            emit(args, {"added": new_id, "removed": repo.key_id},
                 [f"passphrase changed: key {repo.key_id} replaced by key {new_id}"])
        else:
            emit(args, {"added": new_id}, [f"added key {new_id}"])
        return 0
    finally:
        repo.close()


def cmd_repo_upgrade(args) -> int:
    from recovery.repo.repository import Repository
    from recovery.repo.upgrade import upgrade

    repo = Repository.open(args.repo)
    with progress_for(args) as sink:
        result = upgrade(repo, on_event=sink)
    lines = [f"added parity to {result.added} of {result.objects} file(s) ({human_size(result.bytes_added)})"]
    lines += [f"not protected: {d}" for d in result.damaged]
    if result.damaged:
        lines.append(f"the repository stays at format {result.version}: run verify to see what the damage "
                     "costs, then upgrade again")
    elif result.version_before == result.version:
        lines.append(f"the repository was already at format {result.version}")
    else:
        lines.append(f"repository {repo.location} is now format {result.version}")
    emit(args, result.to_json(), lines)
    return 6 if result.damaged else 0


def cmd_backup(args) -> int:
    from recovery.repo.repository import Repository

    # The passphrase's Argon2id runs on its own thread while the modules load and the source
    # disk is probed; the backup waits for the key before it writes anything.
    repo = Repository.open(args.repo, background=True)
    from recovery.jobs import BackupJob, run_job

    job = BackupJob(args.disk, repo, args.name, verify=not args.no_verify, zstd_level=args.zstd_level,
                    threads=args.threads)
    try:
        with progress_for(args) as sink, CancelToken().on_interrupt() as token:
            result = run_job(job, on_event=sink, cancel=token).result
    except (KeyboardInterrupt, Cancelled):
        raise Cancelled("cancelled: the repository is intact and its earlier snapshots are unchanged; "
                        "run the same backup again to resume (what was stored is reused)") from None
    # What this run found stored by an interrupted run is neither new nor a saving.
    saved = result.bytes_used - result.bytes_stored_new - result.bytes_resumed
    resumed = (f", reused from the interrupted backup {human_size(result.bytes_resumed)}"
               if result.bytes_resumed else "")
    emit(args, {**result.to_json(), **_unlock_json(repo)}, [
        f"snapshot {result.snapshot[:8]} of {result.name} saved in {human_duration(result.seconds)}",
        f"used data {human_size(result.bytes_used)}, newly stored {human_size(result.bytes_stored_new)}{resumed} "
        f"({human_size(max(saved, 0))} saved by compression and deduplication)",
        *[f"warning: {w}" for w in result.warnings],
    ])
    return 0


def _check_mark(s) -> str:
    """What the last check said: a damaged mark wins over a verified one."""
    if s.damaged:
        return f"  DAMAGED: {s.damaged[0]}"
    return "  verified" if s.verified else ""


def cmd_snapshots(args) -> int:
    from recovery.repo.repository import Repository

    repo = Repository.open(args.repo)
    snaps = repo.snapshots(args.name)
    lines = [f"{s.short_id}  {s.created}  {s.name:<24} {human_size(s.disk_size):>10}  "
             f"used {human_size(s.bytes_used):>10}  new {human_size(s.bytes_stored_new):>10}"
             f"{_check_mark(s)}" for s in snaps]
    emit(args, {"snapshots": [s.to_json() for s in snaps]}, lines or ["no snapshots"])
    return 0


def cmd_verify(args) -> int:
    from recovery.jobs import VerifyJob, run_job
    from recovery.repo.repository import Repository

    repo = Repository.open(args.repo)
    ids = [repo.resolve(args.snapshot, args.name)] if args.snapshot else None
    if ids is None and args.name:
        ids = [s.id for s in repo.snapshots(args.name)]
    with progress_for(args) as sink:
        report = run_job(VerifyJob(repo, ids, repair=args.repair), on_event=sink).result
    lines = [f"checked {len(report.checked)} snapshot(s), {human_size(report.bytes_checked)} read"]
    lines += [r.message() for r in report.repairs]
    lines += report.notes
    lines += [f"DAMAGED {'snapshot ' + d.snapshot[:8] if d.snapshot else 'repository'}: {d.message}"
              for d in report.damaged]
    lines.append("all good" if report.ok else "damage found")
    emit(args, report.to_json(), lines)
    return 0 if report.ok else 6


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_forget(args) -> int:
    from recovery.repo.prune import forget, prune
    from recovery.repo.retention import Policy, judge
    from recovery.repo.repository import Repository

    policy = Policy(last=args.keep_last, daily=args.keep_daily, weekly=args.keep_weekly,
                    monthly=args.keep_monthly, yearly=args.keep_yearly)
    judge([], policy)            # no rule at all: a usage error before anything is opened
    repo = Repository.open(args.repo)
    result = forget(repo, policy, name=args.name, dry_run=args.dry_run, wait=args.wait, say=_say)
    data, lines = result.to_json(), result.lines()
    if args.prune:
        gone = frozenset(v.id for v in result.removed) if args.dry_run else frozenset()
        pruned = prune(repo, threshold=args.repack_threshold, dry_run=args.dry_run, wait=args.wait, say=_say,
                       without=gone)
        data["prune"] = pruned.to_json()
        lines += pruned.plan.lines() if args.dry_run else pruned.lines()
    emit(args, data, lines + (["(dry run: nothing removed)"] if args.dry_run else []))
    return 0


def cmd_prune(args) -> int:
    from recovery.repo.prune import prune
    from recovery.repo.repository import Repository

    repo = Repository.open(args.repo)
    result = prune(repo, threshold=args.repack_threshold, dry_run=args.dry_run, wait=args.wait, say=_say)
    lines = result.plan.lines() + ["(dry run: nothing deleted)"] if args.dry_run else result.lines()
    emit(args, result.to_json(), lines)
    return 0


def is_foreign(ref: str) -> bool:
    """A restore's first argument names an image when it is a path that exists (a snapshot id
    or "latest" is not)."""
    return ref != "latest" and os.path.exists(ref)


def cmd_inspect(args) -> int:
    from recovery.sources.open import open_source

    with open_source(args.image) as source:
        with progress_for(args) as sink:
            found = source.prove_events(sink, CancelToken())
        lines = source.describe()
        if found:
            lines += [f"DAMAGED: {d.why}" for d in found]
            lines.append("it cannot be restored or imported as it is")
        else:
            lines.append("complete and intact: every piece a restore needs was read and checked")
        emit(args, {**source.to_json(), "intact": not found,
                    "damage": [d.__dict__ for d in found]}, lines)
    return 6 if found else 0


def cmd_import(args) -> int:
    from recovery.jobs import ImportJob, run_job
    from recovery.repo.repository import Repository
    from recovery.sources.open import open_source

    repo = Repository.open(args.repo)
    with open_source(args.image) as source:
        try:
            with progress_for(args) as sink, CancelToken().on_interrupt() as token:
                result = run_job(ImportJob(source, repo, args.name, verify=not args.no_verify), on_event=sink,
                                 cancel=token).result
        except (KeyboardInterrupt, Cancelled):
            raise Cancelled("cancelled: the repository is intact and its earlier snapshots are unchanged; "
                            "run the same import again to resume (what was stored is reused)") from None
    emit(args, result.to_json(), [
        f"snapshot {result.snapshot[:8]} of {result.name} imported from the {source.kind} {source.location} "
        f"in {human_duration(result.seconds)}",
        f"used data {human_size(result.bytes_used)}, newly stored {human_size(result.bytes_stored_new)}",
        *[f"warning: {w}" for w in result.warnings],
    ])
    return 0


def cmd_restore(args) -> int:
    from contextlib import nullcontext

    from recovery.repo.repository import Repository

    if is_foreign(args.snapshot):
        from recovery.jobs import RestoreJob
        from recovery.sources.open import open_source

        holder = open_source(args.snapshot)
        job = RestoreJob(None, args.snapshot, args.target, layout=args.layout, salvage=args.salvage, source=holder)
    else:
        if not args.repo:
            raise UsageError(f"{args.snapshot} is neither an image file or folder nor, without --repo, a snapshot: "
                             "name the repository with --repo (or set LIFEBOAT_REPO)")
        holder = nullcontext()
        # The key is derived in the background while the modules load and the target is probed
        # (see cmd_backup).
        repo = Repository.open(args.repo, background=True)
        from recovery.jobs import RestoreJob

        job = RestoreJob(repo, args.snapshot, args.target, name=args.name,
                         layout=args.layout, salvage=args.salvage)
    with holder:
        return _run_restore(args, job)


def _run_restore(args, job) -> int:
    from recovery.jobs import run_job

    head_before: list[bytes] = []          # the target's start once confirmed: did Ctrl-C come before writing?

    def confirm(plan) -> bool:
        if not args.yes:
            if not sys.stdin.isatty():
                raise RefusedError("restore needs confirmation: run it on a terminal, or add --yes")
            for line in plan.lines():
                print(line, file=sys.stderr)
            answer = input(f"Type the target's name ({plan.target.name}) to erase it and restore: ")
            if answer.strip() != plan.target.name:
                raise Cancelled("nothing was written: the name typed does not match the target")
        head_before.append(_target_head(plan.target.path))
        return True

    token = CancelToken()
    try:
        with token.on_interrupt():
            outcome = run_job(job, confirm=confirm, dry_run=args.dry_run, display=lambda: progress_for(args),
                              cancel=token)
    except KeyboardInterrupt:
        raise Cancelled(_restore_cancelled(args.target, head_before)) from None
    except Cancelled:
        if not token.cancelled:          # refused at the question: its own words stand
            raise
        raise Cancelled(_restore_cancelled(args.target, head_before)) from None
    if args.dry_run:
        emit(args, {"plan": outcome.plan.to_json(), "dry_run": True},
             outcome.plan.lines() + ["(dry run: nothing written)"])
        return 0
    result = outcome.result
    emit(args, {**result.to_json(), **_unlock_json(job.repo)}, result.lines())
    return PARTIAL_EXIT if result.partial else 0


def _unlock_json(repo) -> dict:
    """The unlock's seconds (the Argon2id derivation) and, of those, how long the command
    waited for it (the rest ran beside its start-up work)."""
    if repo is None:
        return {"unlock_seconds": 0.0, "unlock_wait_seconds": 0.0}
    return {"unlock_seconds": round(repo.unlock_seconds, 3), "unlock_wait_seconds": round(repo.unlock_wait_seconds, 3)}


def _target_head(path: str) -> bytes:
    """The first MiB of the target: the restore's first write (wiping the old table) lands there."""
    from recovery.diskio import Disk
    from recovery.restore.actions import WIPE_HEAD

    with Disk(path) as disk:
        return disk.read(0, min(WIPE_HEAD, disk.size))


def _restore_cancelled(target: str, head_before: list[bytes]) -> str:
    """What a Ctrl-C left on the target, said as it is: before the confirmation or while the
    snapshot was being proven nothing was written, after that the disk carries the mark."""
    from recovery.probe.restore_mark import read_mark

    if not head_before:
        return "cancelled: nothing was written"
    if read_mark(target) is not None:
        return ("cancelled: the target is marked as an incomplete restore and will not start; "
                "run the same restore again to resume")
    if _target_head(target) == head_before[0]:
        return "cancelled before anything was written: the target is unchanged"
    return ("cancelled: the target was changed and carries no incomplete-restore mark; do not use it "
            "before running the same restore again")


def cmd_write_usb(args) -> int:
    from recovery import usbstick as us
    from recovery.jobs import WriteUsbJob, run_job
    from recovery.probe.disks import describe

    iso, device = args.iso, args.device
    if iso and not device and (iso.startswith("/dev/") or os.path.exists(iso) and not os.path.isfile(iso)):
        iso, device = None, iso                      # only a device was given
    iso = iso or us.default_image()
    us.check_image(iso)
    terminal = sys.stdin.isatty()

    def ask(prompt: str) -> str:
        print(prompt, end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not terminal:
            print(file=sys.stderr)                   # the answer was not echoed: end the line
        if not answer:
            raise Cancelled("nothing was written: no answer was typed")
        return answer.strip()

    if not device:
        sticks = us.candidates()
        lines = [f"{i}) {us.describe_line(d)}" for i, d in enumerate(sticks, 1)]
        if not sticks:
            raise DiskError("no removable USB stick is plugged in (plug one in, or name the device)")
        if not terminal or args.json:
            emit(args, {"sticks": [d.to_json() for d in sticks]}, ["removable USB disks:", *lines])
            raise UsageError("name the stick to write: lifeboat write-usb ISO DEVICE")
        print("Removable USB disks:", *lines, sep="\n", file=sys.stderr)
        pick = ask(f"Which one (1-{len(sticks)})? ")
        if not pick.isdigit() or not 1 <= int(pick) <= len(sticks):
            raise Cancelled("nothing was written: no stick was picked")
        device = sticks[int(pick) - 1].path
    disk = describe(device)
    job = WriteUsbJob(iso, device, data=args.data, force=args.force, disk=disk)
    try:
        plan = job.plan()
    except RefusedError as exc:
        if not (terminal and not args.yes and exc.message == us.mounted_refusal(disk)):
            raise
        print(exc.message, file=sys.stderr)
        if ask(f"Unmount now ({us.unmount_command(disk)})? [y/N] ").lower() not in ("y", "yes"):
            raise Cancelled("nothing was written: the stick is still mounted") from None
        us.unmount(disk)
        job.disk = None                   # its mounts changed: describe it again
        plan = job.plan()

    def confirm(plan) -> bool:
        for line in plan.lines():
            print(line, file=sys.stderr)
        if not args.yes and ask(f"Type the device's name ({plan.name}) to erase it: ") != plan.name:
            raise Cancelled("nothing was written: the name typed does not match the device")
        if plan.override and ask(f"{plan.override}. Type '{plan.override_phrase}' to write it anyway: ") \
                != plan.override_phrase:
            raise Cancelled("nothing was written: the confirmation typed does not match")
        job.override_confirmed = bool(plan.override)
        return True

    token = CancelToken()
    try:
        with token.on_interrupt():
            result = run_job(job, confirm=confirm, plan=plan, display=lambda: progress_for(args), cancel=token).result
    except KeyboardInterrupt:
        raise Cancelled(f"cancelled: {disk.path} is incomplete and will not boot; write it again") from None
    except Cancelled:
        if not token.cancelled:
            raise
        raise Cancelled(f"cancelled: {disk.path} is incomplete and will not boot; write it again") from None
    emit(args, result.to_json(), us.done_lines(result, plan.target.is_image))
    return 0


def cmd_tui(args) -> int:
    from tui.app import main as tui_main

    return tui_main(args.repo, args.disk)


COMMANDS = {
    "disks": cmd_disks, "repo": cmd_repo, "backup": cmd_backup, "snapshots": cmd_snapshots,
    "verify": cmd_verify, "restore": cmd_restore, "tui": cmd_tui, "write-usb": cmd_write_usb,
    "inspect": cmd_inspect, "import": cmd_import, "key": cmd_key, "forget": cmd_forget, "prune": cmd_prune,
}


def _browse(name: str):
    """mount, umount, ls, get: recovery/browse/commands.py, loaded only when one is run."""
    def run(args) -> int:
        from recovery.browse.commands import COMMANDS as BROWSE
        return BROWSE[name](args)
    return run


COMMANDS.update({name: _browse(name) for name in ("mount", "umount", "ls", "get")})


def tools_on_path() -> None:
    """Debian keeps sfdisk, mkfs.* and resize2fs in /usr/sbin and /sbin, which a normal
    user's PATH lacks: image files work without root, so their tools must be found too."""
    path = os.environ.get("PATH", "").split(os.pathsep)
    extra = [d for d in ("/usr/sbin", "/sbin") if d not in path]
    if extra:
        os.environ["PATH"] = os.pathsep.join(path + extra)


def main(argv: list[str] | None = None) -> int:
    tools_on_path()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from recovery.logsetup import start_log

    logging.getLogger().addHandler(logging.NullHandler())   # details only ever go to the log file
    log_path = start_log(args.command) if args.command in ("backup", "restore", "verify", "import",
                                                                "forget", "prune") else None
    from recovery.storage import stall
    from recovery.storage.base import UnreachableError

    stall.end_when_held(lambda message: report_error(args, message, UnreachableError.exit_code))
    try:
        location_options(args)
        unlock_options(args)
        if args.command in ("backup", "restore"):
            # Their repository's passphrase starts its Argon2id now, beside the imports that follow.
            from recovery.repo.keys import start_early

            start_early(getattr(args, "repo", None))
        terminal_prompts()
        return COMMANDS[args.command](args)
    except LifeboatError as exc:
        log.error("%s", exc.message, exc_info=True)
        # Said once: a call a server still holds after this only ends the process (at exit
        # its thread would be waited for), without a second line.
        stall.end_when_held(lambda message: None)
        return report_error(args, exc.message, exc.exit_code)
    except KeyboardInterrupt:
        return report_error(args, "cancelled", 130)
    except Exception as exc:   # a bug: keep the traceback for the log, one line for the person
        log.exception("internal error")
        where = f" (details in {log_path})" if log_path else ""
        return report_error(args, f"internal error: {exc}{where}", 1)


def location_options(args) -> None:
    """The S3 flags become the environment every location is opened with (no secret among them)."""
    for flag, var in (("s3_endpoint", "LIFEBOAT_S3_ENDPOINT"), ("s3_region", "LIFEBOAT_S3_REGION")):
        value = getattr(args, flag, None)
        if value:
            os.environ[var] = value
    # A flag beats the environment's choice of the other addressing; both flags: parse() refuses.
    path, virtual = getattr(args, "s3_path_style", None), getattr(args, "s3_virtual_host", None)
    if path:
        os.environ["LIFEBOAT_S3_PATH_STYLE"] = "1"
    if virtual:
        os.environ["LIFEBOAT_S3_VIRTUAL_HOST"] = "1"
    if path != virtual:
        os.environ.pop("LIFEBOAT_S3_VIRTUAL_HOST" if path else "LIFEBOAT_S3_PATH_STYLE", None)


def unlock_options(args) -> None:
    """--passphrase-file / --recovery-code-file become the environment every repository is
    opened with, so each command (and each repository it opens) unlocks alike. Only the
    file's name travels; the passphrase is never in argv or the environment."""
    from recovery.repo.keys import PASSPHRASE_ENV, RECOVERY_CODE_ENV

    for flag, var in (("passphrase_file", PASSPHRASE_ENV), ("recovery_code_file", RECOVERY_CODE_ENV)):
        value = getattr(args, flag, None)
        if value and getattr(args, "command", None) != "repo":
            os.environ[var] = os.path.abspath(value)


def terminal_prompts() -> None:
    """On a terminal, an unknown SSH host key is shown and accepted by typing yes, and a
    password is asked without echo; elsewhere both come from the environment or fail."""
    if not sys.stdin.isatty():
        return
    import getpass

    from recovery.storage import mounted

    def host_key(server: str, prints: list[str]) -> bool:
        print(f"The SSH server {server} is not known yet. Its host key:", file=sys.stderr)
        for p in prints:
            print(f"  {p}", file=sys.stderr)
        print("Accept it only if it is the one the server's administrator gives you.", file=sys.stderr)
        return input("Type yes to accept it and remember it: ").strip().lower() == "yes"

    mounted.ask_host_key = host_key
    mounted.ask_password = lambda prompt, **_: getpass.getpass(prompt)
    from recovery.repo import keys

    keys.ask_passphrase = lambda prompt: getpass.getpass(prompt)


def report_error(args, message: str, code: int) -> int:
    """The one line on stderr; with --json also {"error", "code"} on stdout, for programs."""
    print(f"lifeboat: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "code": code}))
    return code
