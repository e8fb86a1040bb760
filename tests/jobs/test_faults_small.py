"""The smaller faults of issue 27 (items 6 and 7), each refused in one line or handled as no data:
pure logic, no Ray, no servers."""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import h5py
import numpy as np
import pytest

from faults import cli, one_line


def odim_rate(path, rate: np.ndarray):
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
        for key, value in (("object", "COMP"), ("version", "H5rad 2.2"), ("date", "20240101"), ("time", "120000")):
            f.require_group("what").attrs[key] = np.bytes_(value)
        f.create_dataset("dataset1/data1/data", data=rate)
        what = f.require_group("dataset1/data1/what")
        what.attrs["quantity"] = np.bytes_("RATE")
        what.attrs["gain"], what.attrs["offset"] = 1.0, 0.0
    return path


def test_non_finite_or_absurd_odim_rain_rates_are_no_data(tmp_path):
    from pipelines.radar import odim
    from pipelines.radar.preprocess import to_canonical

    rate = np.array([[np.inf, 1e308, np.nan, 1.0, 0.0, -np.inf]], dtype=np.float64)
    dbz = odim.decode(odim_rate(tmp_path / "x.h5", rate), 300.0)
    assert np.isnan(dbz[0, [0, 2, 5]]).all() and dbz[0, 4] == -np.inf  # R = 0 is no echo
    pixel, valid = to_canonical(dbz)
    assert valid[0].tolist() == [False, False, False, True, True, False]
    assert pixel[0, [0, 1]].tolist() == [0, 0]  # never the top of the scale (60 dBZ)


def test_non_finite_or_absurd_bom_amounts_are_no_data(tmp_path):
    from pipelines.radar import bom
    from pipelines.radar.preprocess import to_canonical

    path = tmp_path / "x.nc"
    with h5py.File(path, "w") as f:
        var = f.create_dataset("precipitation", data=np.array([[32000, 1, 0]], dtype=np.int16))
        var.attrs["scale_factor"] = np.array([1e306])
        var.attrs["add_offset"] = np.array([0.0])
    _, valid = to_canonical(bom.decode(path, 600.0))
    assert valid[0].tolist() == [False, False, True]


def test_a_truncated_mnist_gz_is_one_line(tmp_path, capsys):
    data = gzip.compress(b"\x00\x00\x08\x03" + bytes(12 + 28 * 28 * 4))
    path = tmp_path / "t10k.gz"
    path.write_bytes(data[: len(data) // 2])
    code, _, err = cli(capsys, "prepare", "mnist", "--mnist", path, "--out", tmp_path / "out", "--counts", "1,1,1")
    assert code == 2
    one_line(err, f"--mnist {path}: not a readable gzip file")
    assert not (tmp_path / "out").exists()


def test_mnist_with_a_single_frame_is_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "prepare", "mnist", "--mnist", tmp_path / "none.gz", "--out", tmp_path / "out",
                    "--frames", "1")
    assert code == 2
    one_line(err, "--frames must be >= 2")


@pytest.mark.parametrize("value", ["inf", ".inf", "-.inf", "nan", "1e999"])
def test_non_finite_learning_rates_are_refused(value):
    from jobs.training.config import load_config

    with pytest.raises(ValueError, match="optim.lr"):
        load_config("kth-tiny", "kth", [f"optim.lr={value}"])


def test_storage_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    file = tmp_path / "storage"
    file.write_text("not a folder")
    code, _, err = cli(capsys, "train", "--task", "kth", "--data", tmp_path / "no-data", "--config", "kth-tiny",
                    "--workers", "0", "--storage", file)
    assert code == 2
    one_line(err, f"--storage {file}: is a file")
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["run-ü", "a b", "../escape", ".hidden"])
def test_run_names_that_cannot_name_a_folder_are_refused_before_any_work(tmp_path, capsys, name):
    code, _, err = cli(capsys, "train", "--task", "kth", "--data", tmp_path / "no-data", "--config", "kth-tiny",
                    "--workers", "0", "--storage", tmp_path / "storage", "--run-name", name)
    assert code == 2
    one_line(err, "--run-name")
    assert not (tmp_path / "storage").exists()


def test_a_retrain_lock_whose_expiry_has_no_time_zone_is_read_as_utc(tmp_path):
    from jobs.ops.locks import RetrainLock

    path = tmp_path / "ds.retrain.lock"
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    path.write_text(json.dumps({"owner": "someone", "token": "<another run>", "acquired": past, "expires": past}))
    with RetrainLock(str(path), ttl_s=60) as lock:  # stale (UTC): broken and taken over, no TypeError
        assert lock.holds()
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    path.write_text(json.dumps({"owner": "someone", "token": "<another run>", "acquired": future, "expires": future}))
    from jobs.errors import LockHeld

    with pytest.raises(LockHeld):
        RetrainLock(str(path), ttl_s=60).acquire()
