"""Moving MNIST (Srivastava et al. 2015): bouncing digits in a square canvas, as Parquet shards.

Digits are drawn from a fixed subset of `subset` images of the given MNIST IDX file (chosen by
`seed`). Each digit (28x28) starts at a uniform position with a uniform direction and a speed in
SPEED_RANGE px/frame, bounces off the canvas edges (position and velocity reflect) and is pasted
at the rounded position; overlapping digits combine by max. Sequence i of a split depends only on
(seed, split, i), so chunks of sequences are generated in parallel Ray tasks in any order.
Shards: `frames` uint8 `[frames, 1, size, size]`, `source` "mnist", `start` = sequence index.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines.driver import DatasetSpec, Publish, run_prepare
from pipelines.sources import Source, build_options
from pipelines.manifest import SPLITS, Manifest

TASK = "mnist"
DIGIT = 28
SPEED_RANGE = (2.0, 5.0)  # px per frame
_IDX3_MAGIC = 0x00000803


@dataclass(frozen=True)
class MnistOptions:
    """counts: sequences per split (train, val, test); size: canvas side in px."""

    counts: tuple[int, int, int] = (10000, 2000, 3000)
    digits: int = 2
    size: int = 64
    frames: int = 20
    subset: int = 500
    seed: int = 0
    chunk: int = 250  # sequences per Ray task

    def __post_init__(self):
        if len(self.counts) != len(SPLITS) or min(self.counts) < 0:
            raise ValueError(f"--counts must be three non-negative numbers (train,val,test), got {self.counts}")
        if not sum(self.counts):
            raise ValueError(f"--counts {','.join(map(str, self.counts))}: no sequence to generate; nothing to prepare")
        for name in ("digits", "frames", "subset", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.frames < 2:
            raise ValueError(f"--frames must be >= 2 (at least one input and one target frame), got {self.frames}")
        if self.size < DIGIT:
            raise ValueError(f"--size must be >= {DIGIT} (the digit size), got {self.size}")

    def to_params(self) -> dict:
        return {"counts": dict(zip(SPLITS, self.counts)), "digits": self.digits, "size": self.size,
                "frames": self.frames, "subset": self.subset, "seed": self.seed,
                "speed_px_per_frame": list(SPEED_RANGE)}

    @classmethod
    def from_params(cls, params: dict, **overrides) -> "MnistOptions":
        """`to_params` read back, `overrides` on top."""
        values = {"counts": tuple(params["counts"][s] for s in SPLITS), "digits": params["digits"],
                  "size": params["size"], "frames": params["frames"], "subset": params["subset"],
                  "seed": params["seed"]}
        return build_options(cls, values, overrides)


def load_idx_images(path: str | Path) -> np.ndarray:
    """MNIST IDX3 images (gzip or raw) -> uint8 `[N, 28, 28]`; ValueError naming --mnist if malformed."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt .gz
            raise ValueError(f"--mnist {path}: not a readable gzip file ({type(exc).__name__}: {exc})") from None
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != _IDX3_MAGIC:
        raise ValueError(f"--mnist {path}: not an IDX3 image file (magic 0x00000803)")
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    if (rows, cols) != (DIGIT, DIGIT) or len(raw) != 16 + n * rows * cols:
        raise ValueError(f"--mnist {path}: expected {DIGIT}x{DIGIT} images and {16 + n * rows * cols} bytes")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)


def subset_indices(n_images: int, subset: int, seed: int) -> np.ndarray:
    """The fixed digit subset: `subset` distinct image indices drawn by `seed`, sorted."""
    if subset > n_images:
        raise ValueError(f"--subset {subset} is larger than the MNIST file ({n_images} images)")
    return np.sort(np.random.default_rng([seed, 7]).choice(n_images, subset, replace=False))


def sequence(digits: np.ndarray, split: str, index: int, options: MnistOptions) -> np.ndarray:
    """Sequence `index` of `split`: uint8 `[frames, size, size]` from the subset images `digits` [K, 28, 28]."""
    rng = np.random.default_rng([options.seed, SPLITS.index(split), index])
    limit = options.size - DIGIT
    canvas = np.zeros((options.frames, options.size, options.size), np.uint8)
    for _ in range(options.digits):
        digit = digits[rng.integers(len(digits))]
        position = rng.uniform(0, limit, 2)
        angle = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(*SPEED_RANGE) * np.array([np.sin(angle), np.cos(angle)])
        for t in range(options.frames):
            y, x = np.rint(position).astype(int)
            np.maximum(canvas[t, y:y + DIGIT, x:x + DIGIT], digit, out=canvas[t, y:y + DIGIT, x:x + DIGIT])
            position, velocity = _bounce(position + velocity, velocity, limit)
    return canvas


def _bounce(position: np.ndarray, velocity: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect coordinates that left [0, limit] back inside and flip their velocity."""
    velocity = velocity.copy()
    for axis in range(2):
        if position[axis] < 0:
            position[axis], velocity[axis] = -position[axis], -velocity[axis]
        elif position[axis] > limit:
            position[axis], velocity[axis] = 2 * limit - position[axis], -velocity[axis]
    return np.clip(position, 0, limit), velocity


def chunk_windows(source: Source, *, digits: np.ndarray, options: MnistOptions) -> Iterator[dict]:
    """Ray task body: the sequences [meta start, meta stop) of the source's split."""
    for index in range(source.meta["start"], source.meta["stop"]):
        yield {"frames": sequence(digits, source.split, index, options)[:, None], "source": "mnist", "start": index}


def plan(mnist: str | Path, options: MnistOptions) -> list[Source]:
    """One Source per chunk of `options.chunk` sequences, per split."""
    sources = []
    for split, count in zip(SPLITS, options.counts):
        for start in range(0, count, options.chunk):
            sources.append(Source(name=f"{split}-{start:07d}", paths=[str(mnist)], split=split,
                                  meta={"start": start, "stop": min(start + options.chunk, count)}))
    return sources


def schema(options: MnistOptions) -> dict:
    return {
        "frames": {"shape": [options.frames, 1, options.size, options.size], "dtype": "uint8", "unit": "pixel",
                   "encoding": "MNIST intensity, digits combined by max"},
        "source": {"shape": [], "dtype": "str"},
        "start": {"shape": [], "dtype": "int64", "unit": "sequence index within the split"},
    }


def prepare_mnist(mnist: str | Path, out: str, options: MnistOptions = MnistOptions(), *,
                  publish: Publish = Publish()) -> Manifest:
    """Generate Moving MNIST from the IDX file `mnist` into shards at `out`; returns the manifest."""
    if not Path(mnist).is_file():
        raise FileNotFoundError(f"--mnist {mnist}: no such file")
    images = load_idx_images(mnist)
    subset = subset_indices(len(images), options.subset, options.seed)
    params = options.to_params()
    sources = plan(mnist, options)
    spec = DatasetSpec(task=TASK, params=params, schema=schema(options), extra={"subset_indices": subset.tolist()},
                       members={split: [s.name for s in sources if s.split == split] for split in SPLITS})
    return run_prepare(spec, sources, partial(chunk_windows, digits=images[subset], options=options), out,
                       protect=[str(mnist)], publish=publish)
