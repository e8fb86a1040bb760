"""`convlstm retrain` and its lock: the lease semantics first (fast), then the scheduled step
end to end on tiny synthetic KTH data (real Ray, real MLflow store, real files)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from jobs.registry import tracking
from jobs.cli import main
from jobs.training.config import load_config
from jobs.ops.locks import LockHeld, LockLost, RetrainLock, lock_uri_for
from jobs.errors import EXIT_TEMPFAIL as EXIT_LOCKED
from jobs.ops.promotion import PromotionRule, paired_test
from jobs.ops.challenger import decide
from jobs.ops.retrain import new_sources, retrain
from jobs.ops.retrain_config import RetrainConfig, RetrainOptions, load_retrain_config
from jobs.ops.retrain_report import REPORT_NAME
from jobs.registry.history import history
from jobs.training.driver import Compute, train
from pipelines.kth import KthOptions, prepare_kth
from pipelines.driver import Publish
from manifests import manifest_of
from pipelines.manifest import load_manifest
from pipelines.synthetic import write_kth_videos

REPO = Path(__file__).resolve().parents[2]


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
from jobs.ops.locks import LockHeld, RetrainLock
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


@pytest.mark.integration  # several processes race for the lock
def test_processes_contending_for_the_lock_have_exactly_one_winner(tmp_path):
    uri, results, n = str(tmp_path / "kth.retrain.lock"), tmp_path / "results", 4
    results.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, uri, str(results), str(n), f"p{i}"], cwd=REPO)
             for i in range(n)]
    assert [p.wait(timeout=120) for p in procs] == [0] * n
    assert len(list(results.glob("*.won"))) == 1
    assert len(list(results.glob("*.held"))) == n - 1
    assert not Path(uri).exists()


def test_paired_test_promotes_only_a_significant_improvement_in_the_metric_direction():
    champion = [0.5] * 12
    better = [0.6] * 12
    for test in ("bootstrap", "sign"):
        rule = PromotionRule(test=test, min_windows=10)
        assert paired_test(champion, better, True, rule).promote
        assert not paired_test(better, champion, True, rule).promote
        assert paired_test(better, champion, False, rule).promote  # lower is better: 0.5 beats 0.6
        tie = paired_test(champion, champion, True, rule)
        assert not tie.promote and tie.p_value == 1.0 and tie.n == 12
        assert tie.reason == "not promoted: no significant difference (p = 1, n = 12)"
    noisy = [0.5 + (0.01 if i % 2 else -0.009) for i in range(12)]  # wins 6 of 12: noise
    decision = paired_test(champion, noisy, True)
    assert not decision.promote and decision.p_value > 0.05 and decision.gain > 0
    assert "no significant difference" in decision.reason
    few = paired_test([0.5] * 3, [0.9] * 3, True, PromotionRule(min_windows=10))
    assert not few.promote and few.n == 3 and few.p_value is None
    undefined = paired_test([None, 0.5, float("nan")] + [0.5] * 9, [0.9] * 12, True, PromotionRule(min_windows=10))
    assert undefined.n == 10 and undefined.promote
    assert not paired_test(champion, better, True,
                           PromotionRule(margin=0.2)).promote  # gain 0.1 is not above the margin
    assert not paired_test(champion, better, True, PromotionRule(confidence=0.9999, samples=100)).promote  # p >= 1/101
    with pytest.raises(ValueError, match="length"):
        paired_test([1.0], [1.0, 2.0], True)


def test_the_gate_also_requires_beating_each_named_baseline_on_the_same_windows():
    """rainfall MSE (lower is better): the challenger beats the champion on every window, and optical
    flow on none of them."""
    scored = {"champion": {"per_window": {"model": [1.0] * 12}},
              "challenger": {"per_window": {"model": [0.5] * 12, "persistence": [0.9] * 12,
                                            "optical-flow": [0.4] * 12}}}
    assert decide(scored, RetrainConfig(), higher=False).promote
    assert decide(scored, RetrainConfig(must_beat=["persistence"]), higher=False).promote
    gated = decide(scored, RetrainConfig(must_beat=["persistence", "optical-flow"]), higher=False)
    assert not gated.promote and gated.n == 12 and gated.gain == pytest.approx(0.5)
    assert gated.reason == "not promoted: does not beat optical-flow significantly (p = 1, n = 12)"


def test_retrain_config_validation_names_the_key(tmp_path):
    path = tmp_path / "retrain.yaml"
    path.write_text("margin: 0.05\ninit: from-scratch\ntrain_overrides: [train.epochs=2]\nmust_beat: [optical-flow]\n")
    config = load_retrain_config(path, margin=0.2, confidence=None)
    assert (config.margin, config.init, config.train_overrides) == (0.2, "from-scratch", ["train.epochs=2"])
    assert (config.must_beat, config.confidence, config.test, config.keep_versions) == (["optical-flow"], 0.95,
                                                                                        "bootstrap", None)
    for text, key in (("margin: -1\n", "margin"), ("init: warm\n", "init"), ("lock_ttl_s: 0\n", "lock_ttl_s"),
                      ("marginn: 1\n", "marginn"), ("confidence: 1\n", "confidence"),
                      ("must_beat: [rover]\n", "must_beat"), ("test: t\n", "test"),
                      ("keep_versions: 0\n", "keep_versions"), ("min_windows: 0\n", "min_windows")):
        path.write_text(text)
        with pytest.raises(ValueError, match=key):
            load_retrain_config(path)


def test_new_radar_days_and_mnist_chunks_are_detected_against_the_manifest(sample_data):
    mch = sample_data / "radar-mch-sample"
    manifest = manifest_of(params={"format": "mch"}, sources=["2016-07-11"])
    assert new_sources("radar", str(mch), manifest, {}, None) == ["2016-07-12"]
    manifest = manifest_of(params={"format": "mch"}, sources=["2016-07-11"],
                           rejected=[{"file": "x", "source": "2016-07-12/b03", "reason": "truncated"}])
    assert new_sources("radar", str(mch), manifest, {}, None) == []

    mnist = sample_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    params = {"counts": {"train": 4, "val": 2, "test": 2}, "digits": 2, "size": 64, "frames": 20,
              "subset": 500, "seed": 0}
    manifest = manifest_of(params=params, sources=["train-0000000", "val-0000000", "test-0000000"])
    assert new_sources("mnist", str(mnist), manifest, {}, None) == []
    assert new_sources("mnist", str(mnist), manifest, {"counts": [300, 2, 2]}, None) == ["train-0000250"]
    with pytest.raises(ValueError, match="prepare.countz"):
        new_sources("mnist", str(mnist), manifest, {"countz": [1, 1, 1]}, None)


# ----------------------------------------------------------------------------- end to end

MODEL = "convlstm-kth-retrain-test"
# Two actions that the synthetic figures tell apart in one epoch: a trained challenger reaches
# accuracy ~1 on the test person, while the lr ~ 0 models keep their seed-0 initialisation, which
# predicts neither class (accuracy 0). lr must be > 0 in the config, so "untrained" is lr 1e-12.
ACTIONS = ("boxing", "walking")
TRAIN_YAML = f"""
task: kth
model: {{name: classifier, params: {{hidden_channels: [8], kernel_size: 3}}}}
loss: {{name: cross_entropy}}
optim: {{name: adam, lr: 0.01}}
data: {{batch_size: 8}}
train: {{epochs: 2, monitor: val_accuracy, mode: max, bf16: false}}
registry: {{name: {MODEL}}}
"""
UNTRAINED = ["optim.lr=1e-12", "train.epochs=1"]


@dataclass
class World:
    src: Path
    data: str
    train_yaml: Path
    tmp: Path

    def add_persons(self, persons: list[int]) -> None:
        write_kth_videos(self.src, persons=persons, actions=ACTIONS, scenarios=("d1",), frames=40)

    def retrain_yaml(self, name: str, overrides: list[str] = (), init: str = "from-scratch") -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"train_config": str(self.train_yaml), "train_overrides": list(overrides),
                                        "workers": 0, "init": init, "min_windows": 4}))
        return path

    def cli(self, config: Path, out: str) -> list[str]:
        return ["retrain", "--task", "kth", "--src", str(self.src), "--data", self.data,
                "--config", str(config), "--out", str(self.tmp / out)]


@pytest.fixture(scope="module")
def world(ray_local, project_home, tmp_path_factory) -> World:
    """Shards of persons 11 (train), 1 (val), 2 (test) and an untrained champion of MODEL."""
    tmp = tmp_path_factory.mktemp("retrain")
    w = World(tmp / "videos", str(tmp / "kth"), tmp / "train.yaml", tmp)
    w.train_yaml.write_text(TRAIN_YAML)
    w.add_persons([11, 1, 2])
    prepare_kth(w.src, w.data, KthOptions(frame_len=10, stride=10, size=(30, 40)), publish=Publish(progress=False))
    summary = train(load_config(w.train_yaml, "kth", UNTRAINED), w.data, compute=Compute(workers=0))
    assert summary.alias == "champion"
    return w


def _runs() -> int:
    client = tracking.client()
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=10000)) if ids else 0


def _champion() -> str:
    return str(tracking.client().get_model_version_by_alias(MODEL, "champion").version)


def _versions() -> list[str]:
    return sorted(str(v.version) for v in tracking.client().search_model_versions(f"name='{MODEL}'"))


def test_nothing_new_exits_0_without_a_run(world, capsys):
    runs, versions = _runs(), _versions()
    assert main(world.cli(world.retrain_yaml("plain"), "nothing")) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (_runs(), _versions()) == (runs, versions)
    assert not (world.tmp / "nothing").exists()


def test_better_challenger_is_promoted_and_a_concurrent_run_is_refused(world, capsys):
    """Run A trains a real challenger; run B starts while A holds the lock and must exit 75."""
    world.add_persons([12, 3])
    versions, champion, runs = _versions(), _champion(), _runs()
    assert main([*world.cli(world.retrain_yaml("dry"), "dry"), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["status"] == "dry-run" and len(dry["new_sources"]) == 4
    assert (_runs(), _versions()) == (runs, versions)
    lock = Path(lock_uri_for(world.data))
    codes: dict[str, int] = {}
    first = threading.Thread(target=lambda: codes.setdefault("a", main(world.cli(world.retrain_yaml("a"), "a"))))
    first.start()
    while not lock.exists() and first.is_alive():
        time.sleep(0.01)
    codes["b"] = main(world.cli(world.retrain_yaml("b"), "b"))
    first.join()

    assert codes == {"a": 0, "b": EXIT_LOCKED}
    assert "another retrain is running" in capsys.readouterr().err
    report = json.loads((world.tmp / "a" / REPORT_NAME).read_text())
    assert report["status"] == "promoted" and report["decision"]["promote"]
    assert report["challenger"]["score"] > report["champion"]["score"]
    assert report["champion"]["version"] == champion
    new = [v for v in _versions() if v not in versions]
    assert new == [report["challenger"]["version"]] and _champion() == new[0]
    assert tracking.CHALLENGER not in tracking.client().get_registered_model(MODEL).aliases  # moved, not doubled
    assert report["decision"]["p_value"] < 0.05 and report["decision"]["n"] >= 4
    last = history(None, MODEL)[-1]
    assert (last["action"], last["champion_before"], last["champion_after"]) == ("promoted", champion, new[0])
    assert last["scores"]["challenger"] == pytest.approx(report["challenger"]["score"])
    assert sorted(report["new_sources"]) == sorted(f"person{p:02d}_{a}_d1_uncomp" for p in (3, 12) for a in ACTIONS)
    assert report["data"]["fingerprint"] == load_manifest(world.data)["fingerprint"]
    assert not (world.tmp / "b").exists() and not lock.exists()


def test_a_run_that_fails_after_extending_the_shards_is_picked_up_by_the_next(world, capsys):
    world.add_persons([14, 6])
    champion, lock = _champion(), Path(lock_uri_for(world.data))
    failing = world.retrain_yaml("failing", ["train.monitor=val_bogus"])
    assert main(world.cli(failing, "failing")) == 2  # training refuses the config after the prepare step
    assert "train.monitor" in capsys.readouterr().err
    assert _champion() == champion and not lock.exists()
    manifest = load_manifest(world.data)
    assert "person14_boxing_d1_uncomp" in manifest["sources"]
    assert new_sources("kth", str(world.src), manifest, {}, None) == []

    report = retrain("kth", str(world.src), world.data, load_retrain_config(world.retrain_yaml("next")),
                     RetrainOptions(out=str(world.tmp / "next")))
    assert report["new_sources"] == [] and report["status"] in ("promoted", "kept-champion")
    assert report["challenger"]["data_fingerprint"] == manifest["fingerprint"]
    again = retrain("kth", str(world.src), world.data, load_retrain_config(world.retrain_yaml("again")))
    assert again["status"] == "nothing-to-do"


def test_worse_challenger_keeps_the_champion_and_records_the_decision(world):
    """Warm-started from the champion with lr ~ 0, the challenger IS the champion: a tie, kept."""
    world.add_persons([13, 5])
    champion = _champion()
    config = load_retrain_config(world.retrain_yaml("worse", UNTRAINED, init="warm-start"))
    report = retrain("kth", str(world.src), world.data, config, RetrainOptions(out=str(world.tmp / "worse")))

    assert report["status"] == "kept-champion" and not report["decision"]["promote"]
    assert report["challenger"]["init"] == "warm-start"
    assert report["challenger"]["score"] == report["champion"]["score"]
    assert _champion() == champion == report["champion"]["version"]
    client = tracking.client()
    challenger_run = client.get_run(report["challenger"]["run_id"])
    assert challenger_run.data.tags["convlstm.init_from"] == f"models:/{MODEL}/{champion}"
    assert report["decision"]["reason"].startswith("not promoted: no significant difference (p = 1, n = ")
    fingerprint = load_manifest(world.data)["fingerprint"]
    last = history(None, MODEL)[-1]
    assert (last["action"], last["champion_before"], last["champion_after"], last["challenger"]) == \
        ("kept-champion", champion, champion, report["challenger"]["version"])
    assert last["data_fingerprint"] == fingerprint and last["reason"] == report["decision"]["reason"]
    for version in (champion, report["challenger"]["version"]):  # both version pages show the test scores
        page = client.get_model_version(MODEL, version)
        assert fingerprint[:12] in page.tags["eval.test"] and "**test**" in page.description
        assert not any(k.startswith("convlstm.retrain.") for k in page.tags)
    assert REPORT_NAME in [a.path for a in client.list_artifacts(report["challenger"]["run_id"])]
    assert json.loads((world.tmp / "worse" / REPORT_NAME).read_text())["decision"] == report["decision"]
