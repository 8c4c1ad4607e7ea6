"""A server the kernel waits on for good (an NFS server frozen mid-job, whose calls a forced
unmount does not end: recovery/storage/stall.py): the stall watch gives up, and the app ends
the running job with the line, as a failed job, instead of showing it running for ever."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.tui.helpers import make_app, ready, wait_for

pytestmark = pytest.mark.tui

LINE = ("nfs://nas/backups stopped answering (no answer, and the system's NFS client still waits on "
        "it); gave up after 360 s — nothing already saved is lost; run it again when the server is back "
        "(LIFEBOAT_RETRY_SECONDS sets how long to wait)")


def test_a_job_held_by_the_kernel_ends_with_the_watchs_line(machine):
    from recovery.storage import stall
    from recovery.storage.base import UnreachableError
    from tui.screens.home import HomeScreen
    from tui.screens.job import JobScreen

    release = threading.Event()

    def held_job(on_event, cancel):
        release.wait(60)            # as a thread the kernel holds in the NFS client waits
        return "returned late"

    async def scenario():
        app = make_app(machine)
        outcomes = []
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            assert stall.on_give_up == app.server_held
            job = JobScreen("Backing up", held_job, cancel_title="Stop?", cancel_text="Stop the backup?")
            app.push_screen(job, outcomes.append)
            await wait_for(pilot, lambda: job.running and app.screen is job, what="the job to run")
            # the watch gives up on its own thread
            threading.Thread(target=stall.on_give_up, args=(LINE,)).start()
            await wait_for(pilot, lambda: outcomes, what="the job screen to end")
            assert not job.running and app.screen is not job
            error = outcomes[0].error
            assert isinstance(error, UnreachableError) and error.message == LINE
            assert not outcomes[0].cancelled
            assert app.threads_held
            assert isinstance(app.screen, HomeScreen)          # back where the job was started from
            release.set()                                # the kernel lets go after all
            await pilot.pause(0.5)
            assert len(outcomes) == 1                    # the late return is ignored
            await pilot.press("ctrl+q")                  # no job is running: quitting is allowed
            await wait_for(pilot, lambda: app.return_code == 0, what="the app to end")
        assert stall.on_give_up is None

    asyncio.run(scenario())
