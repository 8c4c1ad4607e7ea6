"""Mutate only part of a big module: mark every line of FILE outside FIRST..LAST (1-based,
inclusive) with mutmut's `# pragma: no mutate`, in place. Run it on run.sh's scratch copy
only (never the work tree), then go on with RESUME=1 so run.sh keeps that copy:
    python3 tests/mutation/only_lines.py build/mutation/copy/recovery/repo/repository.py 1 753
A comment can only end a line that is not inside a string; the lines inside a docstring are
left alone (mutmut does not mutate docstrings)."""

import io
import sys
import tokenize

path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
source = open(path).read()
lines = source.splitlines(keepends=True)
ends = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type in (tokenize.NEWLINE, tokenize.NL)}
marked = 0
for number in sorted(ends):
    line = lines[number - 1]
    if first <= number <= last or not line.strip() or line.rstrip().endswith("\\"):
        continue
    lines[number - 1] = line.rstrip("\n") + "  # pragma: no mutate\n"
    marked += 1
open(path, "w").write("".join(lines))
print(f"{path}: {marked} lines outside {first}..{last} marked")
