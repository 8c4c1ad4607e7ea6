"""Kill rate per module from the caches run.sh keeps ($OUT/cache-<label>), read directly so no
mutmut command touches a cache while a run is going (`mutmut results` re-reads the mutated file
and would record a mutant's line as the source).

A timed-out mutant counts as killed: its tests did not pass (the mutant loops forever); so does
a "suspicious" one (mutmut's name for a killed mutant whose failing run was slow)."""

import sqlite3
import sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'module':<12} {'killed':>6} {'timeout':>7} {'survived':>8} {'untested':>8} {'total':>5}  rate")
for cache in sorted(out.glob("cache-*")):
    db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
    counts = dict(db.execute("select status, count(*) from Mutant group by status"))
    killed = counts.get("ok_killed", 0) + counts.get("ok_suspicious", 0)
    timeout = counts.get("bad_timeout", 0)
    survived = counts.get("bad_survived", 0)
    untested = counts.get("untested", 0) + counts.get("skipped", 0)
    total = sum(counts.values())
    rate = f"{100 * (killed + timeout) / total:.0f} %" if total else "-"
    print(f"{cache.name[6:]:<12} {killed:>6} {timeout:>7} {survived:>8} {untested:>8} {total:>5}  {rate}")
