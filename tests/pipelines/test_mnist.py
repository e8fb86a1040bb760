"""Moving MNIST on the real MNIST test set: IDX reading, determinism, the digit subset, bouncing, counts."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from pipelines.mnist import (DIGIT, SPEED_RANGE, MnistOptions, load_idx_images, prepare_mnist, sequence,
                             subset_indices)
from pipelines.driver import Publish
from pipelines.shards import read_windows


@pytest.fixture(scope="module")
def mnist_file(sample_data):
    return sample_data / "mnist" / "t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def images(mnist_file):
    return load_idx_images(mnist_file)


def test_idx_reader_gzip_and_raw(images, mnist_file, tmp_path):
    assert images.shape == (2000, 28, 28)  # the repository's copy: the first 2,000 test digits
    assert images.dtype == np.uint8
    assert abs(images.mean() - 30.826) < 1e-3  # of these 2,000 digits (the full set's is 33.791)
    raw = tmp_path / "t10k-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress(mnist_file.read_bytes()))
    assert np.array_equal(load_idx_images(raw), images)
    labels = mnist_file.parent / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(ValueError, match="--mnist .*IDX3"):
        load_idx_images(labels)


def test_sequences_are_deterministic_by_seed_split_and_index(images):
    options = MnistOptions(frames=6, size=48)
    digits = images[subset_indices(len(images), 500, 0)]
    first = sequence(digits, "train", 3, options)
    assert first.shape == (6, 48, 48)
    assert np.array_equal(first, sequence(digits, "train", 3, options))
    assert not np.array_equal(first, sequence(digits, "train", 4, options))
    assert not np.array_equal(first, sequence(digits, "val", 3, options))
    assert not np.array_equal(first, sequence(digits, "train", 3, MnistOptions(frames=6, size=48, seed=1)))
    assert np.array_equal(subset_indices(10000, 500, 0), subset_indices(10000, 500, 0))
    assert not np.array_equal(subset_indices(10000, 500, 0), subset_indices(10000, 500, 1))


def crop(image: np.ndarray) -> np.ndarray:
    """The bounding box of the non-zero pixels."""
    (y0, x0), (y1, x1) = np.argwhere(image).min(axis=0), np.argwhere(image).max(axis=0)
    return image[y0:y1 + 1, x0:x1 + 1]


def test_single_digit_comes_from_subset_stays_inside_and_bounces(images):
    options = MnistOptions(digits=1, frames=30, size=40, subset=50)
    subset = subset_indices(len(images), options.subset, options.seed)
    limit = options.size - DIGIT
    bounces = 0
    for index in range(10):
        frames = sequence(images[subset], "test", index, options)
        matches = [i for i in subset if np.array_equal(crop(images[i]), crop(frames[0]))]
        assert matches, "the digit is not one of the subset"
        # every frame holds the whole digit, unclipped by the canvas edges
        assert all(np.array_equal(crop(f), crop(frames[0])) for f in frames)
        corner = np.array([np.argwhere(f).min(axis=0) - np.argwhere(images[matches[0]]).min(axis=0) for f in frames])
        assert corner.min() >= 0 and corner.max() <= limit
        step = np.diff(corner, axis=0)
        assert np.hypot(*step.T).max() <= SPEED_RANGE[1] + 1.5
        assert np.median(np.hypot(*step.T)) >= SPEED_RANGE[0] - 1.5
        reversals = np.sign(step[1:]) * np.sign(step[:-1]) < 0
        bounces += int(reversals.sum())
    assert bounces > 0


def test_prepare_counts_and_content(ray_local, mnist_file, images, tmp_path):
    options = MnistOptions(counts=(5, 0, 3), digits=2, size=32, frames=4, subset=40, seed=2, chunk=2)
    manifest = prepare_mnist(mnist_file, str(tmp_path / "mm"), options, publish=Publish(progress=False))
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 5, "val": 0, "test": 3}
    subset = np.array(manifest["subset_indices"])
    assert np.array_equal(subset, subset_indices(len(images), 40, 2))
    for split, count in (("train", 5), ("test", 3)):
        shards = read_windows(str(tmp_path / "mm"), split)
        assert shards["start"].tolist() == list(range(count))
        assert shards["frames"].shape == (count, 4, 1, 32, 32)
        for i in range(count):
            assert np.array_equal(shards["frames"][i, :, 0], sequence(images[subset], split, i, options))
    assert read_windows(str(tmp_path / "mm"), "val")["frames"].shape == (0, 4, 1, 32, 32)

    # chunking is an execution detail: other chunks, same sequences
    again = prepare_mnist(mnist_file, str(tmp_path / "mm2"), MnistOptions(**{**options.__dict__, "chunk": 5}),
                          publish=Publish(progress=False))
    assert np.array_equal(read_windows(str(tmp_path / "mm2"), "train")["frames"],
                          read_windows(str(tmp_path / "mm"), "train")["frames"])
    assert again["params"] == manifest["params"]


def test_bad_options():
    with pytest.raises(ValueError, match="--size"):
        MnistOptions(size=20)
    with pytest.raises(ValueError, match="--counts"):
        MnistOptions(counts=(1, 2))
    with pytest.raises(ValueError, match="--subset"):
        subset_indices(100, 500, 0)
