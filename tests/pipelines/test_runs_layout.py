"""The runs layout (each frame stored once, windows cut when read) against the windows layout (each
window stored whole): the same windows bit for bit on the real KNMI and BoM samples, through the
single-process reader and the Ray Data read path; leak-free splits; footers that count windows."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipelines import shard_writer, shards
from pipelines.manifest import load_manifest, manifest_path
from pipelines.radar.prepare import RadarOptions, prepare_radar
from pipelines.driver import Publish
from pipelines.runs import Run, covered, cut, frame_schema
from pipelines.shard_writer import SchemaError, stack_runs, to_table, with_starts, write_shard
from pipelines.shards import read_dataset, read_windows, window_counts

# Overlapping windows at stride 1 (the paper's are 5 + 15 frames; the trimmed samples hold 24 frames,
# too few for 20-frame windows in three splits): 2 + 4 frames at 100 x 100.
PAPER = RadarOptions(in_len=2, out_len=4, stride=1, size=(100, 100), split="time", val_fraction=0.3,
                     test_fraction=0.3)
SAMPLES = {"knmi": "radar-knmi-sample", "bom": "radar-bom-sample"}
SCHEMA = {"frames": {"shape": [3, 1, 2, 2], "dtype": "uint8"}, "source": {"shape": [], "dtype": "str"},
          "start": {"shape": [], "dtype": "int64"}}


def toy_run(rows: int, starts: list[int], source: str = "a", first: int = 0) -> Run:
    frames = (np.arange(rows * 4, dtype=np.uint8) + first).reshape(rows, 1, 2, 2)
    return Run({"frames": frames, "source": np.full(rows, source, dtype=object),
                "start": np.arange(first, first + rows, dtype=np.int64)}, starts)


def test_cut_takes_length_rows_for_tensors_and_the_first_row_for_scalars():
    run = toy_run(6, [0, 2, 3])
    windows = cut(run.columns, run.starts, SCHEMA)
    assert windows["frames"].shape == (3, 3, 1, 2, 2)
    np.testing.assert_array_equal(windows["frames"][1], run.columns["frames"][2:5])
    assert windows["start"].tolist() == [0, 2, 3]


def test_covered_drops_frames_no_window_uses_and_renumbers_starts():
    run = covered(toy_run(10, [4, 5]), length=3)  # rows 0-3 and 8-9 are in no window
    assert run.columns["start"].tolist() == [4, 5, 6, 7] and run.starts == [0, 1]
    with pytest.raises(ValueError, match="outside a run of 10 frames"):
        covered(toy_run(10, [8]), length=3)


def test_stacked_runs_written_and_read_back_across_row_groups(tmp_path, monkeypatch):
    """Two sources in one file, row groups of a few frames: windows straddling groups come back whole."""
    monkeypatch.setattr(shard_writer, "_GROUP_BYTES", 20)  # about 3 frame rows per row group
    runs = [toy_run(7, [0, 1, 4]), toy_run(5, [0, 2], source="b", first=100)]
    columns, starts = stack_runs(runs, SCHEMA)
    assert starts == [0, 1, 4, 7, 9]
    table = with_starts(to_table(columns, frame_schema(SCHEMA)), starts)
    file = write_shard(str(tmp_path), "train", table, SCHEMA, "one")
    assert pq.ParquetFile(file).num_row_groups > 3
    fs, _ = shards.storage.resolve(file)
    windows = [w for batch in shards._file_windows(fs, file, SCHEMA, ["frames", "source", "start"]) for w in
               zip(*batch.values())]
    expected = [w for run in runs for w in zip(*cut(run.columns, run.starts, SCHEMA).values())]
    assert len(windows) == len(expected) == 5
    for got, want in zip(windows, expected):
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:] == want[1:]
    assert window_counts(str(tmp_path), "train") == {"one.parquet": 5}


def test_a_run_with_other_columns_than_the_schema_is_a_schema_error():
    with pytest.raises(SchemaError):
        stack_runs([Run({"frames": np.zeros((3, 1, 2, 2), np.uint8)}, [0])], SCHEMA)


@pytest.fixture(scope="module")
def both_layouts(ray_local, sample_data, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{sample: (runs dataset, windows dataset)}: 2 + 4 frames at stride 1, 100 x 100 (PAPER)."""
    root = tmp_path_factory.mktemp("layouts")
    made = {}
    for name, folder in SAMPLES.items():
        pair = (root / f"{name}-runs", root / f"{name}-windows")
        for out, layout in zip(pair, ("runs", "windows")):
            prepare_radar(sample_data / folder, str(out), options=PAPER, layout=layout, publish=Publish(progress=False))
        made[name] = pair
    return made


@pytest.mark.parametrize("sample", SAMPLES)
def test_runs_layout_reads_the_same_windows_bit_for_bit(both_layouts, sample):
    runs, windows = both_layouts[sample]
    manifest, old = load_manifest(runs), load_manifest(windows)
    assert manifest["layout"] == "runs" and old["layout"] == "windows"
    assert manifest["splits"] == old["splits"] and manifest["sources"] == old["sources"]
    splits = [split for split, info in manifest["splits"].items() if info["count"]]
    assert len(splits) == 3
    for split in splits:
        new, before = read_windows(str(runs), split), read_windows(str(windows), split)
        assert len(new["start"]) == manifest["splits"][split]["count"]
        for column in manifest["schema"]:
            assert new[column].dtype == before[column].dtype
            np.testing.assert_array_equal(new[column], before[column])
        assert sum(window_counts(str(runs), split).values()) == manifest["splits"][split]["count"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_ray_read_path_cuts_the_same_windows(both_layouts, sample):
    runs, windows = both_layouts[sample]
    split = max(load_manifest(runs)["splits"].items(), key=lambda item: item[1]["count"])[0]
    keyed = {}
    for path in (runs, windows):
        rows = read_dataset(str(path), split, ["frames", "mask", "start"]).take_all()
        keyed[path] = {row["start"]: (np.asarray(row["frames"]), np.asarray(row["mask"])) for row in rows}
    assert keyed[runs].keys() == keyed[windows].keys() and keyed[runs]
    for start, (frames, mask) in keyed[runs].items():
        assert frames.shape == (PAPER.in_len + PAPER.out_len, 1, 100, 100)
        np.testing.assert_array_equal(frames, keyed[windows][start][0])
        np.testing.assert_array_equal(mask, keyed[windows][start][1])


def test_splits_share_no_frame_and_each_frame_is_stored_once(both_layouts):
    runs, _ = both_layouts["bom"]
    manifest = load_manifest(runs)
    step = timedelta(seconds=manifest["time_step_s"])
    frames_of = {}
    for split, info in manifest["splits"].items():
        starts = read_windows(str(runs), split, ["start"])["start"]
        frames_of[split] = {datetime.fromisoformat(s) + step * k for s in starts for k in range(PAPER.in_len + PAPER.out_len)}
        stored = [t for file in Path(runs, split).glob("*.parquet") for t in pq.read_table(file)["start"].to_pylist()]
        assert len(stored) == len(set(stored)) == len(frames_of[split])  # once each, and only frames windows use
    names = sorted(frames_of)
    assert all(not frames_of[a] & frames_of[b] for a in names for b in names if a < b)


def frames_once_bytes(windows: Path, out: Path) -> int:
    """Bytes of the distinct frames and masks of a windows-layout dataset, one Parquet file per split
    (the writer's default compression, as the shards use)."""
    manifest = load_manifest(windows)
    step = timedelta(seconds=manifest["time_step_s"])
    total = 0
    for split, info in manifest["splits"].items():
        if not info["count"]:
            continue
        read = read_windows(str(windows), split, ["frames", "mask", "start"])
        once = {}
        for frames, mask, start in zip(read["frames"], read["mask"], read["start"]):
            for k in range(len(frames)):
                once[datetime.fromisoformat(start) + step * k] = (frames[k].tobytes(), mask[k].tobytes())
        pq.write_table(pa.table({"frames": [f for f, _ in once.values()], "mask": [m for _, m in once.values()]}),
                       out / f"{split}.parquet", use_dictionary=False)
        total += (out / f"{split}.parquet").stat().st_size
    return total


@pytest.mark.parametrize("sample", SAMPLES)
def test_runs_take_at_most_1_5x_the_frames_stored_once(both_layouts, sample, tmp_path):
    runs, windows = both_layouts[sample]
    stored = {path: sum(f.stat().st_size for f in path.rglob("*.parquet")) for path in (runs, windows)}
    once = frames_once_bytes(windows, tmp_path)
    assert stored[runs] <= 1.5 * once < stored[windows]


def test_a_dataset_written_before_layouts_existed_still_loads(both_layouts, tmp_path):
    _, windows = both_layouts["knmi"]
    old = tmp_path / "old"
    old.mkdir()
    for split_dir in windows.iterdir():
        if split_dir.is_dir():
            (old / split_dir.name).symlink_to(split_dir)
    manifest = load_manifest(windows).to_json()
    del manifest["layout"]
    Path(manifest_path(str(old))).write_text(json.dumps(manifest))
    split = next(s for s, info in manifest["splits"].items() if info["count"])
    np.testing.assert_array_equal(read_windows(str(old), split)["frames"], read_windows(str(windows), split)["frames"])


def test_incremental_prepare_onto_the_other_layout_says_how_to_re_prepare(both_layouts, sample_data, capsys):
    _, windows = both_layouts["knmi"]
    rc = main(["prepare", "radar", "--src", str(sample_data / SAMPLES["knmi"]), "--out", str(windows),
               "--in-len", "2", "--out-len", "4", "--split", "time", "--val-fraction", "0.3", "--test-fraction", "0.3",
               "--incremental"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "layout" in err[0] and "--overwrite" in err[0]


def test_lazy_read_cuts_the_same_windows_when_indexed(both_layouts):
    runs, windows = both_layouts["bom"]
    lazy, before = read_windows(str(runs), "train", lazy=True), read_windows(str(windows), "train")
    frames = lazy["frames"]
    assert isinstance(frames, shards.WindowColumn) and frames.shape == before["frames"].shape
    assert frames.frames.nbytes * 2 < before["frames"].nbytes  # holds frames, not windows (6-frame windows: 3x)
    order = np.random.default_rng(0).permutation(len(frames))[:7]
    np.testing.assert_array_equal(frames[order], before["frames"][order])
    np.testing.assert_array_equal(lazy["mask"][3:9][np.arange(2)], before["mask"][3:5])
    assert lazy["start"].tolist() == before["start"].tolist()
    joined = shards.concatenate([frames, frames[:5]])
    np.testing.assert_array_equal(joined[np.arange(len(frames), len(frames) + 5)], before["frames"][:5])
    np.testing.assert_array_equal(shards.concatenate([frames[:2], before["frames"][:1]]), before["frames"][[0, 1, 0]])
