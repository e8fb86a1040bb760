"""What a streamed read of the runs layout holds in memory, whatever the split's size: Ray Data's
object-store budget on a local Ray (`pipelines.ray_session.bound_read_ahead`) and the blocks the read
ships (one batch of cut windows each, `pipelines.shards._CUT_BYTES`). The sizes they bound are
measured in benchmarks/README.md, "Archive scale"."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import shards
from pipelines.driver import Publish
from pipelines.manifest import load_manifest
from pipelines.radar.prepare import RadarOptions, prepare_radar
from pipelines.ray_session import READ_AHEAD_PER_CPU, bound_read_ahead
from pipelines.shards import read_dataset

MIB = 1 << 20
# 2 + 4 frames at stride 1, 256 x 256: a window's frames and mask are 0.75 MiB, so one 4 MiB batch
# holds 5 windows and the training split (about 14 windows of the 24-frame KNMI sample) several batches.
BIG = RadarOptions(in_len=2, out_len=4, stride=1, size=(256, 256), split="time", val_fraction=0.1,
                   test_fraction=0.1)


def test_the_read_ahead_budget_is_per_cpu_and_a_callers_own_is_kept():
    from ray.data import DataContext

    fresh = DataContext()
    bound_read_ahead(2, fresh)
    assert fresh.execution_options.resource_limits.object_store_memory == 2 * READ_AHEAD_PER_CPU <= 64 * MIB
    own = DataContext()
    own.execution_options.resource_limits = own.execution_options.resource_limits.copy(object_store_memory=5 * MIB)
    bound_read_ahead(2, own)
    assert own.execution_options.resource_limits.object_store_memory == 5 * MIB


def test_a_local_ray_bounds_what_a_streamed_read_holds_ahead(ray_local):
    from ray.data import DataContext

    cpus = ray_local.cluster_resources()["CPU"]
    assert DataContext.get_current().execution_options.resource_limits.object_store_memory == cpus * READ_AHEAD_PER_CPU


@pytest.fixture(scope="module")
def big_frames(ray_local, sample_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("read-memory") / "knmi-256"
    prepare_radar(sample_data / "radar-knmi-sample", str(out), options=BIG, layout="runs",
                  publish=Publish(progress=False))
    return out


def test_a_streamed_runs_read_ships_one_cut_batch_per_block(big_frames):
    """Each block is about one 4 MiB batch of cut windows (Ray Data reslices to the target size, at
    most one window over; by default it would join a read task's batches into blocks of up to
    128 MiB), and every window arrives once."""
    windows = load_manifest(big_frames)["splits"]["train"]["count"]
    window_mib = 2 * (BIG.in_len + BIG.out_len) * 256 * 256 / MIB
    assert windows * window_mib > 2 * 4  # several 4 MiB batches, or the test proves nothing
    ds = read_dataset(str(big_frames), "train", ["frames", "mask"]).materialize()
    blocks = [entry.metadata for bundle in ds.iter_internal_ref_bundles() for entry in bundle.blocks]
    assert sum(block.num_rows for block in blocks) == windows
    assert max(block.size_bytes for block in blocks) <= shards._CUT_BYTES + window_mib * MIB + 1024
    assert shards._CUT_BYTES <= 4 * MIB
    assert len(blocks) >= windows * window_mib / 4
