"""What a dataset module hands the prepare driver (`pipelines.driver.run_prepare`): the `Source`s to
decode, and the windows function that decodes one, raising `Rejected` for a bad source or yielding
`Dropped` for a bad file inside a good one; `build_options` for its options dataclass."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterator

WindowsFn = Callable[["Source"], Iterator[dict]]


@dataclass
class Source:
    """One unit of decoding work: a video file, a radar day or block, an MNIST chunk."""

    name: str  # stable id, the key in manifest["sources"]
    paths: list[str]  # input files, checksummed into the manifest
    split: str
    meta: dict = field(default_factory=dict)  # whatever windows_fn needs: person, label, timestamps...


def build_options(cls, values: dict, overrides: dict):
    """`cls(**values)` (a dataset's options dataclass, validated on construction) with `overrides` on
    top (a retrain config's `prepare`); ValueError naming `prepare.<key>` for an unknown option."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"prepare.{unknown[0]}: unknown option (known: {', '.join(sorted(names))})")
    return cls(**{**values, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}})


class Rejected(Exception):
    """Raised by a windows function: the source is skipped and listed in `rejected` with str(exc)."""


@dataclass(frozen=True)
class Dropped:
    """Yielded by a windows function among its windows: `file`, one input of the source, could not be
    used (listed in `rejected` with `reason`); the source's other windows are kept."""

    file: str
    reason: str
