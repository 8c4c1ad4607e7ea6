"""Print each surviving mutant of one module as a one-line diff, from run.sh's cache, without
running mutmut (see tally.py): survivors.py $OUT/cache-<label> <source file>.
Run it with the venv's python (it uses mutmut's own mutation code to rebuild each mutant)."""

import sqlite3
import sys

from mutmut import Context, RelativeMutationID, mutate

cache, source_path = sys.argv[1], sys.argv[2]
source = open(source_path).read()
original = source.splitlines()
db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
rows = db.execute(
    "select m.id, l.line, l.line_number, m.'index', m.status from Mutant m join Line l on m.line = l.id"
    " where m.status in ('bad_survived', 'untested') order by l.line_number, m.'index'"
)
for mid, line, number, index, status in rows:
    context = Context(source=source, mutation_id=RelativeMutationID(line, index, number), filename=source_path)
    mutated, _ = mutate(context)
    changed = mutated.splitlines()
    diff = [(i, a, b) for i, (a, b) in enumerate(zip(original, changed)) if a != b]
    for i, a, b in diff or [(number, line, "(line removed)")]:
        print(f"#{mid} {status} L{i + 1}: {a.strip()}  ->  {b.strip()}")
