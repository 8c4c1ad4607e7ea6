"""Where a restore's time goes: bench/run runs this with the project's .venv, as root.

    python bench/restore_phases.py REPO SNAPSHOT TARGET

Runs the same restore as `lifeboat restore SNAPSHOT TARGET --repo REPO --layout keep --yes`
through the engine's own job (recovery.jobs.RestoreJob, run_job, apply_restore, unchanged),
but times each action of the plan (prove, prepare, write-partition, table, ...) from the
outside: wall seconds and the process's CPU seconds (user + system, all threads). Prints one
JSON object on stdout. Nothing here changes what the restore does; the wrappers only read
clocks around each action's run().
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.monotonic()


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> int:
    repo_path, snapshot, target = sys.argv[1:4]
    c0 = cpu()
    from recovery.cli import tools_on_path
    from recovery.events import CancelToken
    from recovery.jobs import RestoreJob, run_job
    from recovery.repo.repository import Repository

    tools_on_path()
    steps: list[dict] = []
    t_import, c_import = time.monotonic(), cpu()
    steps.append({"step": "python imports", "seconds": t_import - T0, "cpu": c_import - c0})

    repo = Repository.open(repo_path)
    job = RestoreJob(repo, snapshot, target, layout="keep")

    def timed_action(action):
        inner = action.run

        def run(ctx):
            t, c = time.monotonic(), cpu()
            try:
                return inner(ctx)
            finally:
                label = action.kind + (f" {action.number}" if hasattr(action, "number") else "")
                steps.append({"step": label, "seconds": time.monotonic() - t, "cpu": cpu() - c})
        action.run = run        # instance attribute: this plan object only

    class Timed:
        kind = job.kind

        def plan(self):
            t, c = time.monotonic(), cpu()
            p = job.plan()
            steps.append({"step": "open + plan", "seconds": time.monotonic() - t + (t - t_import),
                          "cpu": cpu() - c + (c - c_import)})
            for a in p.actions:
                timed_action(a)
            return p

        def confirm_name(self, plan):
            return job.confirm_name(plan)

        def run(self, plan, on_event, cancel):
            t, c = time.monotonic(), cpu()
            result = job.run(plan, on_event, cancel)
            inside = sum(s["seconds"] for s in steps[2:])
            steps.append({"step": "apply, outside its actions", "seconds": time.monotonic() - t - inside,
                          "cpu": cpu() - c - sum(s["cpu"] for s in steps[2:])})
            return result

    outcome = run_job(Timed(), confirm=lambda plan: True, cancel=CancelToken())
    result = outcome.result
    print(json.dumps({"steps": steps, "seconds": time.monotonic() - T0, "cpu": cpu() - c0,
                      "bytes_written": result.bytes_written, "engine_seconds": result.seconds,
                      "status": result.status}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
