"""KTH person splits: the published presets or a JSON file mapping split -> person ids.

Presets: `official` (Schuldt et al. 2004, as in 00sequences.txt), `tutorial` (the PyTorch ConvLSTM
tutorial's 17/5/3), `openstl` (OpenSTL's KTH benchmark: train 1-16, test 17-25, no val).

Rule for persons found in the input: a person is *known* if it is one of KTH's 25 or is named
in the split definition. A known person in no split is an error before any work starts (the
split definition forgot someone); an unknown person (e.g. person31, not in the definition) is a
per-file rejection, like any other input that is not part of the dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

KTH_PERSONS = frozenset(range(1, 26))

PRESETS: dict[str, dict[str, list[int]]] = {
    "official": {
        "train": list(range(11, 19)),
        "val": [1, 4, 19, 20, 21, 23, 24, 25],
        "test": [2, 3, 5, 6, 7, 8, 9, 10, 22],
    },
    "tutorial": {
        "train": [1, 2, 4, 5, 6, 7, 9, 11, 12, 15, 17, 18, 20, 21, 22, 23, 24],
        "val": [3, 8, 10, 19, 25],
        "test": [13, 14, 16],
    },
    "openstl": {
        "train": list(range(1, 17)),
        "test": list(range(17, 26)),
    },
}


def load_split(spec: str) -> dict[str, list[int]]:
    """A preset name or a JSON file path -> {split: sorted person ids}; ValueError naming --split."""
    if spec in PRESETS:
        return {split: sorted(ids) for split, ids in PRESETS[spec].items()}
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--split must be one of {', '.join(PRESETS)} or a JSON file, got {spec!r}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--split {spec}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw or not all(
            isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            for ids in raw.values()):
        raise ValueError(f"--split {spec}: expected {{\"train\": [person ids], \"val\": [...], ...}}")
    split = {str(name): sorted(ids) for name, ids in raw.items()}
    _check_disjoint(split, spec)
    return split


def _check_disjoint(split: dict[str, list[int]], spec: str) -> None:
    seen: dict[int, str] = {}
    for name, ids in split.items():
        for person in ids:
            if person in seen:
                raise ValueError(f"--split {spec}: person {person} is in both {seen[person]!r} and {name!r}")
            seen[person] = name


def person_splits(split: dict[str, list[int]]) -> dict[int, str]:
    """{person id: split name}."""
    return {person: name for name, ids in split.items() for person in ids}


def is_known(person: int, split: dict[str, list[int]]) -> bool:
    """One of KTH's 25 persons, or named in the split definition (see the module's rule)."""
    return person in KTH_PERSONS or person in person_splits(split)


def check_covered(persons: set[int], split: dict[str, list[int]], spec: str) -> None:
    """ValueError naming the first known person of `persons` that is in no split."""
    assigned = person_splits(split)
    missing = sorted(p for p in persons if is_known(p, split) and p not in assigned)
    if missing:
        raise ValueError(f"person {missing[0]} has videos but is in no split of --split {spec} "
                         f"(uncovered persons: {missing})")
