"""KTH's `00sequences.txt`: the annotated subsequences of every video.

Entry lines look like `person01_boxing_d1<TABs or spaces>frames<TAB>1-95, 96-185, 186-245, 246-360`
(CRLF line endings, a free-text header, blank lines between persons). Ranges are 1-indexed and
inclusive in the file; they are returned 0-indexed and half-open (`1-95` -> (0, 95)), sorted.
An entry marked `*missing*` (person13_handclapping_d3: the video does not exist) maps to [].
"""
from __future__ import annotations

import re
from pathlib import Path

_ENTRY = re.compile(r"^(person\d+_[a-z]+_d\d+)\s+(.*)$")
_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")


def parse_sequences(text: str) -> dict[str, list[tuple[int, int]]]:
    """{entry name (video stem without `_uncomp`): [(start, stop), ...]} from the file's text."""
    entries: dict[str, list[tuple[int, int]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _ENTRY.match(line.strip())
        if not match:
            continue  # header and blank lines
        name, rest = match.groups()
        if "*missing*" in rest:
            entries[name] = []
            continue
        ranges = [(int(a) - 1, int(b)) for a, b in _RANGE.findall(rest)]
        if not ranges or any(start < 0 or stop <= start for start, stop in ranges):
            raise ValueError(f"sequences file line {number}: bad frame ranges in {line.strip()!r}")
        entries[name] = sorted(ranges)
    return entries


def load_sequences(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """Parse a 00sequences.txt file; ValueError naming --sequences if it holds no entries."""
    entries = parse_sequences(Path(path).read_text(encoding="ascii", errors="replace"))
    if not entries:
        raise ValueError(f"--sequences {path}: no 'personXX_action_dY frames a-b, ...' entries found")
    return entries
