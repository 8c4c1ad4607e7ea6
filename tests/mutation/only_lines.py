"""Mutate only part of a big module: mark every line of FILE outside FIRST..LAST (1-based,
inclusive; several ranges may follow, e.g. the lines of a few survivors) with mutmut's
`# pragma: no mutate`, in place. Run it on run.sh's scratch copy only (never the work tree),
then go on with RESUME=1 so run.sh keeps that copy:
    python3 tests/mutation/only_lines.py build/mutation/copy/recovery/repo/repository.py 1 753
A comment can only end a line that is not inside a string; the lines inside a docstring are
left alone (mutmut does not mutate docstrings)."""

import io
import sys
import tokenize

path, bounds = sys.argv[1], [int(a) for a in sys.argv[2:]]
ranges = list(zip(bounds[::2], bounds[1::2]))
source = open(path).read()
lines = source.splitlines(keepends=True)
ends = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type in (tokenize.NEWLINE, tokenize.NL)}
marked = 0
for number in sorted(ends):
    line = lines[number - 1]
    if any(first <= number <= last for first, last in ranges) or not line.strip() or line.rstrip().endswith("\\"):
        continue
    lines[number - 1] = line.rstrip("\n") + "  # pragma: no mutate\n"
    marked += 1
open(path, "w").write("".join(lines))
print(f"{path}: {marked} lines outside {', '.join(f'{a}..{b}' for a, b in ranges)} marked")
