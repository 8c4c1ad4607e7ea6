/* LD_PRELOAD shim for fair partclone timing (bench/run builds it into build/bench/).

   partclone's progress thread calls sleep(2) between updates and is joined when the copy
   ends, so every partclone run lasts up to 2 s longer than its work. This replaces sleep()
   with a short nanosleep: BENCH_SLEEP_MS milliseconds per call (default 20), whatever the
   number of seconds asked for. Only the bench's partclone commands get it.

   gcc -O2 -shared -fPIC -o partclone_quick_progress.so partclone_quick_progress.c */

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

unsigned int sleep(unsigned int seconds)
{
    const char *env = getenv("BENCH_SLEEP_MS");
    long ms = env ? atol(env) : 20;
    struct timespec ts;

    if (seconds == 0)
        return 0;
    if (ms < 0)
        ms = 0;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
    return 0;
}
