"""Module sizes and the largest functions (length and cyclomatic complexity) of a source tree.

Used for the structure issue's before/after figures:
    python scripts/code_metrics.py src/camanim          # needs radon (pip install radon)
"""

from __future__ import annotations

import sys
from pathlib import Path

from radon.complexity import cc_visit
from radon.raw import analyze


def main(root: str) -> None:
    base = Path(root)
    rows = []
    funcs = []
    sloc = 0
    for path in sorted(base.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(base).as_posix()
        raw = analyze(text)
        rows.append((raw.loc, rel))
        sloc += raw.sloc
        for block in cc_visit(text):
            if block.letter == "C":  # classes: their methods are listed one by one
                continue
            length = block.endline - block.lineno + 1
            funcs.append((block.complexity, length, f"{rel}:{block.fullname}"))
    print(f"modules: {len(rows)}, lines: {sum(n for n, _ in rows)}, source lines (no docstrings, comments, "
          f"blank lines): {sloc}")
    for n, rel in sorted(rows, reverse=True)[:12]:
        print(f"  {n:5d}  {rel}")
    print("most complex functions (complexity, lines):")
    for cc, length, name in sorted(funcs, reverse=True)[:8]:
        print(f"  {cc:3d} {length:4d}  {name}")
    print("longest functions (lines, complexity):")
    for cc, length, name in sorted(funcs, key=lambda f: f[1], reverse=True)[:8]:
        print(f"  {length:4d} {cc:3d}  {name}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "src/camanim")
