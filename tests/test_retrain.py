"""`convlstm retrain` and its lock: the lease semantics first (fast), then the scheduled step
end to end on tiny synthetic KTH data (real Ray, real MLflow store, real files)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.locks import LockHeld, LockLost, RetrainLock, lock_uri_for

REPO = Path(__file__).resolve().parents[1]


def test_lock_excludes_a_second_holder_until_released(tmp_path):
    uri = lock_uri_for(str(tmp_path / "kth"))
    assert uri == str(tmp_path / "kth.retrain.lock")
    with RetrainLock(uri, ttl_s=60, owner="first") as first:
        record = json.loads(Path(uri).read_text())
        assert record["owner"] == "first" and record["token"] == first.token
        with pytest.raises(LockHeld, match="held by first"):
            RetrainLock(uri, ttl_s=60, owner="second").acquire()
        first.verify()
    assert not Path(uri).exists()
    with RetrainLock(uri, ttl_s=60, owner="second") as second:
        assert second.holds()


def test_expired_lock_is_taken_over_and_the_old_holder_loses_it(tmp_path):
    uri = str(tmp_path / "kth.retrain.lock")
    stale = RetrainLock(uri, ttl_s=0.01, owner="crashed").acquire()
    time.sleep(0.05)
    fresh = RetrainLock(uri, ttl_s=60, owner="next").acquire()
    assert json.loads(Path(uri).read_text())["owner"] == "next"
    with pytest.raises(LockLost):
        stale.verify()
    stale.release()  # must not remove the new holder's lock
    assert fresh.holds()
    fresh.release()
    assert not Path(uri).exists()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_lock_is_never_broken(tmp_path):
    uri = tmp_path / "kth.retrain.lock"
    uri.write_text("not json")
    with pytest.raises(LockHeld, match="unreadable"):
        RetrainLock(str(uri), ttl_s=60).acquire()
    assert uri.read_text() == "not json"


def test_bad_lock_arguments(tmp_path):
    with pytest.raises(ValueError, match="ttl_s"):
        RetrainLock(str(tmp_path / "x.lock"), ttl_s=0)
    with pytest.raises(ValueError, match="uri"):
        RetrainLock("gs://bucket/x.lock", ttl_s=60)


_CONTENDER = """
import sys, time
from pathlib import Path
from jobs.locks import LockHeld, RetrainLock
uri, results, n, me = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
try:
    with RetrainLock(uri, ttl_s=120, owner=me):
        (results / f"{me}.won").touch()
        deadline = time.monotonic() + 60  # hold until every other contender has been refused
        while len(list(results.glob("*.held"))) < n - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
except LockHeld:
    (results / f"{me}.held").touch()
"""


def test_processes_contending_for_the_lock_have_exactly_one_winner(tmp_path):
    uri, results, n = str(tmp_path / "kth.retrain.lock"), tmp_path / "results", 4
    results.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, uri, str(results), str(n), f"p{i}"], cwd=REPO)
             for i in range(n)]
    assert [p.wait(timeout=120) for p in procs] == [0] * n
    assert len(list(results.glob("*.won"))) == 1
    assert len(list(results.glob("*.held"))) == n - 1
    assert not Path(uri).exists()
