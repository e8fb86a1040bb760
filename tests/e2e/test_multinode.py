"""A real multi-node Ray cluster whose nodes share no disk, driven only through `convlstm submit`.

tests/helpers/cluster_harness.py starts: a head with 0 CPUs (job drivers only) and two worker nodes with 2
logical CPUs each, each worker node in its own mount namespace with a private /tmp (its Ray temp dir
included) and /dev/shm; a moto S3 server as the only shared storage; a real `mlflow server` (basic
auth, artifacts proxied to S3 with --serve-artifacts) started by infra/mlflow/entrypoint.sh on
PostgreSQL (initdb/pg_ctl as `nobody`), or on sqlite where PostgreSQL cannot run here (the test
prints which, see `backend`). Everything the jobs write goes to s3://<bucket>/convlstm
(CONVLSTM_STORAGE) or to MLflow.

In order: the traps are refused with one line before any work; raw KTH videos and a radar archive on
S3 -> prepare -> train with 2 Ray Train workers on the two worker nodes (checked in Ray's actor
table) -> the registered @champion loads in this process through the server -> evaluate -> a new
video on S3 -> retrain decides the promotion; finally a worker node is killed after the first
checkpoint of a training run, which then finishes on the surviving node in the same MLflow run.
Needs root and unshare (CI has both): without them the module fails, it does not skip.
"""
from __future__ import annotations

import json
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from cluster_harness import (VENV_BIN, MlflowServer, MultiNodeCluster, Postgres, S3Server, client_env,
                             postgres_unavailable, require_isolation)

SAMPLES = Path(__file__).resolve().parents[1] / "data"  # the trimmed real samples the tests carry
MODEL = "convlstm-kth-cluster"
KTH_ARGS = ("--frame-len", "5", "--stride", "5", "--size", "24x32")
TRAIN_ARGS = ("--task", "kth", "--config", "kth-tiny", "--workers", "2", "--cpus-per-worker", "0.5")
OVERRIDES = (f"registry.name={MODEL}", "data.batch_size=4", "data.val_batch_size=8")  # positionals: last


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The cluster, S3 and MLflow; yields a namespace with them and the env every job gets."""
    require_isolation()
    folder = tmp_path_factory.mktemp("multinode")
    started = time.monotonic()
    s3, pg, server, cluster = S3Server(), None, None, None
    try:
        s3.start(folder)
        why_not = postgres_unavailable()
        if why_not is None:
            pg = Postgres().start()
            backend, backend_uri = "postgresql", pg.uri
        else:
            backend, backend_uri = f"sqlite ({why_not})", f"sqlite:///{folder / 'mlflow.db'}"
        print(f"\nmlflow backend store: {backend}")
        server = MlflowServer(backend_uri, s3.uri("mlflow-artifacts"), s3.env).start(folder)
        cluster = MultiNodeCluster(folder, workers=2, cpus_per_node=2, env=s3.env).start()
        job_env = {**s3.env, **server.client_env, "CONVLSTM_STORAGE": s3.uri("convlstm"),
                   "CONVLSTM_TRAIN_PLACEMENT": "SPREAD", "MLFLOW_DISABLE_TELEMETRY": "true"}
        raw = _upload_raw_data(s3, folder)
        yield type("World", (), dict(s3=s3, server=server, cluster=cluster, env=job_env, folder=folder,
                                     backend=backend, raw=raw, started=started))
    finally:
        for part in (cluster, server, pg, s3):
            if part is not None:
                part.stop()
        print(f"multinode harness: {time.monotonic() - started:.0f} s in all")


def _upload_raw_data(s3: S3Server, folder: Path) -> dict[str, str]:
    """KTH videos (one of them not a video) and an MCH radar archive (with a stray file) on S3."""
    from pipelines.synthetic import write_kth_videos

    videos = folder / "kth-videos"
    # One person per official split (train 11, val 19, test 22), 2 actions x 2 scenarios, 4 windows each.
    write_kth_videos(videos, persons=[11, 19, 22], actions=("boxing", "walking"), scenarios=("d1", "d2"), frames=20)
    (videos / "person11_walking_d3_uncomp.avi").write_bytes(b"this is not a video")
    archive = folder / "mch.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(SAMPLES / "radar-mch-sample" / "20160711", arcname="mch/20160711")
        junk = folder / "junk.gif"
        junk.write_bytes(b"GIF89a not a radar frame")
        tar.add(junk, arcname="mch/20160711/junk.gif")
    return {"kth": s3.upload(videos, "raw", "kth"), "radar": s3.upload(archive, "raw", "mch.tar.gz")}


def _one_line_error(result, option: str) -> str:
    lines = [line for line in result.output.splitlines() if "error:" in line and option in line]
    assert lines, result.output[-3000:]
    assert "Traceback" not in result.output, result.output[-3000:]
    return lines[0]


# --- without a cluster: the checks and object-store sources --------------------------------------------

NODES = [{"NodeID": "a" * 56, "NodeManagerAddress": "127.0.0.1", "Alive": True},
         {"NodeID": "b" * 56, "NodeManagerAddress": "127.0.0.1", "Alive": True}]


def test_node_local_paths_are_refused_on_several_nodes_only(monkeypatch, tmp_path):
    from pipelines.cluster import NodeLocalPath, check_paths

    monkeypatch.delenv("CONVLSTM_SHARED_PATHS", raising=False)
    check_paths({"--out": "s3://bucket/x", "--src": "gs://bucket/y", "--data": None}, nodes=NODES)
    check_paths({"--out": str(tmp_path)}, nodes=NODES[:1])
    check_paths({"--out": str(tmp_path)})  # not connected to a cluster: one local node
    with pytest.raises(NodeLocalPath) as refused:
        check_paths({"--out": "s3://bucket/x", "--storage": str(tmp_path)}, nodes=NODES, defaulted={"--storage"})
    message = str(refused.value)
    assert message.startswith(f"--storage {tmp_path}: node-local path on a 2-node cluster; use an s3:// URI or a "
                              "path every node mounts (declare it with CONVLSTM_SHARED_PATHS=/mnt/shared)")
    assert "CONVLSTM_STORAGE" in message and "\n" not in message
    monkeypatch.setenv("CONVLSTM_SHARED_PATHS", f"/mnt/elsewhere:{tmp_path / 'missing'}")
    with pytest.raises(NodeLocalPath, match="is not a folder on this node"):
        check_paths({"--out": str(tmp_path / "missing" / "ds")}, nodes=NODES)


def test_pathlib_mangled_uris_still_name_the_object_store():
    from pipelines import storage

    assert storage.as_uri(Path("s3://bucket/raw/x.tar")) == "s3://bucket/raw/x.tar"
    assert storage.is_remote(Path("gs://b/k")) and not storage.is_remote(Path("/tmp/s3:/x"))
    assert storage.name_of("s3://b/raw/v.avi?endpoint_override=h:1") == "v.avi"


@pytest.fixture(scope="module")
def s3_here(tmp_path_factory):
    """A moto S3 server for this process (AWS env set for the module)."""
    server = S3Server().start(tmp_path_factory.mktemp("s3-here"))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in server.env.items():
            mp.setenv(key, value)
        yield server
    server.stop()


def test_object_store_archives_unpack_through_the_same_checks_and_caps(s3_here, tmp_path):
    import io
    import zipfile

    from pipelines.radar.archive import source_folder

    frames = sorted((SAMPLES / "radar-mch-sample" / "20160711").glob("*.gif"))[:3]
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for frame in frames:
            zf.write(frame, f"day/{frame.name}")
        zf.writestr("README.txt", "not a frame: left out")
    uri = s3_here.upload(good, "archives", "good.zip")
    with source_folder(Path(uri)) as root:  # a Path-mangled URI, as jobs/tasks/radar.py passes it
        assert sorted(p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) == \
            [f.name for f in frames]
        assert (root / "day" / frames[0].name).read_bytes() == frames[0].read_bytes()
    with pytest.raises(ValueError, match="--max-unpacked-mb"):
        with source_folder(s3_here.uri("archives", "good.zip"), max_mb=0.01):
            pass
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        link = tarfile.TarInfo("day/AQC161932155V_00005.801.gif")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "evil.tar.gz").write_bytes(evil.getvalue())
    evil_uri = s3_here.upload(tmp_path / "evil.tar.gz", "archives", "evil.tar.gz")
    with pytest.raises(ValueError, match="link or special file"):
        with source_folder(evil_uri):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with source_folder(s3_here.uri("archives", "missing.tar")):
            pass


def test_outputs_staged_locally_are_uploaded_to_a_uri(s3_here):
    from pipelines import storage

    with storage.staged_output(s3_here.uri("reports", "one")) as folder:
        (folder / "a.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "b.png").write_bytes(b"png")
    assert sorted(s3_here.keys("reports/")) == ["reports/one/a.json", "reports/one/sub/b.png"]
    with pytest.raises(RuntimeError):
        with storage.staged_output(s3_here.uri("reports", "failed")) as folder:
            (folder / "a.json").write_text("{}")
            raise RuntimeError("the job failed")
    assert not s3_here.keys("reports/failed")
    with storage.local_copies([s3_here.uri("reports", "one", "sub", "b.png"), "/etc/hostname"]) as local:
        assert Path(local[0]).read_bytes() == b"png" and local[1] == "/etc/hostname"
    assert not Path(local[0]).exists()


# --- refused before any work ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_local_out_is_refused_in_one_line_and_nothing_is_published(world):
    local = world.folder / "kth-on-the-head"
    done = world.cluster.submit("prepare", "kth", "--src", world.raw["kth"], "--out", str(local), *KTH_ARGS,
                                env=world.env)
    assert done.returncode == 1, done.output[-3000:]
    line = _one_line_error(done, "--out")
    assert f"--out {local}: node-local path on a 3-node cluster" in line
    assert "s3://" in line and "CONVLSTM_SHARED_PATHS=/mnt/shared" in line
    assert not local.exists() and not list(world.folder.glob("kth-on-the-head*"))


@pytest.mark.slow
def test_a_declared_shared_path_that_is_not_shared_is_refused(world):
    declared = world.folder / "not-really-shared"
    declared.mkdir()
    done = world.cluster.submit("prepare", "kth", "--src", world.raw["kth"], "--out", str(declared / "kth"),
                                *KTH_ARGS, env={**world.env, "CONVLSTM_SHARED_PATHS": str(declared)})
    assert done.returncode == 1, done.output[-3000:]
    line = _one_line_error(done, "--out")
    assert "declared shared (CONVLSTM_SHARED_PATHS) but 2 of 3 nodes do not see" in line
    assert sorted(p.name for p in declared.iterdir()) == []  # the marker is removed, nothing published


@pytest.mark.slow
def test_train_without_shared_storage_is_refused_before_any_work(world):
    env = {k: v for k, v in world.env.items() if k != "CONVLSTM_STORAGE"}
    done = world.cluster.submit("train", "--data", world.s3.uri("nowhere"), *TRAIN_ARGS, *OVERRIDES, env=env)
    assert done.returncode == 1, done.output[-3000:]
    line = _one_line_error(done, "--storage")
    assert re.search(r"--storage \S+/outputs/train: node-local path on a 3-node cluster", line), line
    assert "CONVLSTM_STORAGE" in line


# --- the pipeline end to end ---------------------------------------------------------------------------

@pytest.mark.slow
def test_prepare_reads_raw_kth_videos_from_s3_in_the_decode_tasks(world):
    data = world.s3.uri("data", "kth")
    done = world.cluster.submit("prepare", "kth", "--src", world.raw["kth"], "--out", data, *KTH_ARGS, env=world.env)
    assert done.returncode == 0, done.output[-3000:]
    manifest = json.loads(world.s3.read("data/kth/manifest.json"))
    assert {s: manifest["splits"][s]["count"] for s in ("train", "val", "test")} == {"train": 16, "val": 16, "test": 16}
    (bad,) = manifest["rejected"]
    assert bad["file"] == f"{world.raw['kth']}/person11_walking_d3_uncomp.avi" and "unreadable" in bad["reason"]
    shards = [k for k in world.s3.keys("data/kth/") if k.endswith(".parquet")]
    assert {k.split("/")[2] for k in shards} == {"train", "val", "test"}


@pytest.mark.slow
def test_prepare_streams_a_radar_archive_from_s3(world):
    done = world.cluster.submit("prepare", "radar", "--src", world.raw["radar"], "--out", world.s3.uri("data", "radar"),
                                "--in-len", "2", "--out-len", "2", "--size", "32x32", "--split", "time",
                                env=world.env)
    assert done.returncode == 0, done.output[-3000:]
    manifest = json.loads(world.s3.read("data/radar/manifest.json"))
    # 40 frames 5 min apart; --split time: 32 train, 4 val, 4 test frames; windows of 4 frames, stride 1.
    assert {s: info["count"] for s, info in manifest["splits"].items()} == {"train": 29, "val": 1, "test": 1}
    assert [r["file"] for r in manifest["rejected"]] == ["mch/20160711/junk.gif"]
    assert not [k for k in world.s3.keys("data/") if ".src-" in k]  # the staged frames are removed


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_train_places_two_workers_on_two_nodes_and_registers_the_champion(world):
    done = world.cluster.submit("train", "--data", world.s3.uri("data", "kth"), *TRAIN_ARGS, "--run-name", "e2e",
                                *OVERRIDES, env=world.env)
    assert done.returncode == 0, done.output[-3000:]
    # Rank 0's line per epoch reaches `convlstm submit --wait` and the job's logs.
    assert re.search(r"epoch 1/2 .*samples/s", done.stdout), done.stdout[-3000:]
    logs = world.cluster.head.convlstm("jobs", "logs", done.submission_id, "--address", world.cluster.head.address)
    assert "epoch 2/2" in logs.stdout
    ray_logs = subprocess.run([str(VENV_BIN / "ray"), "job", "logs", done.submission_id, "--address",
                               world.cluster.head.address], capture_output=True, text=True, timeout=300,
                              env=client_env(world.cluster.head.token))
    assert ray_logs.returncode == 0 and re.search(r"epoch 1/2 .*samples/s", ray_logs.stdout), ray_logs.stderr[-2000:]
    workers = world.cluster.actors("RayTrainWorker")
    node_ids = {world.cluster.node_id(node) for node in world.cluster.nodes}
    assert len(workers) == 2 and {w["node_id"] for w in workers} == node_ids  # one worker on each worker node
    assert any(k.startswith("convlstm/train/e2e/") and k.endswith("/checkpoint.pt") for k in world.s3.keys("convlstm/"))
    assert re.search(rf"model\s+{MODEL} version 1 \(@champion\)", done.stdout), done.stdout[-2000:]


@pytest.mark.slow
def test_the_champion_loads_here_through_the_tracking_server(world, monkeypatch):
    import torch

    from jobs.registry.modelio import load_model
    from pipelines.shards import read_windows

    for key in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)  # the weights come through the server, not from S3
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", world.server.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", world.server.admin[1])
    net, info = load_model(f"models:/{MODEL}@champion", tracking_uri=world.server.uri)
    for key, value in world.s3.env.items():
        monkeypatch.setenv(key, value)
    assert info["data_fingerprint"] == json.loads(world.s3.read("data/kth/manifest.json"))["fingerprint"]
    frames = read_windows(world.s3.uri("data", "kth"), "test", columns=["frames"])["frames"][:3]
    with torch.no_grad():
        assert net(torch.from_numpy(frames).float() / 255).shape == (3, 6)


@pytest.mark.slow
def test_evaluate_writes_its_report_to_shared_storage(world):
    done = world.cluster.submit("evaluate", "--model", f"models:/{MODEL}@champion", "--data",
                                world.s3.uri("data", "kth"), "--split", "test", env=world.env)
    assert done.returncode == 0, done.output[-3000:]
    reports = [k for k in world.s3.keys("convlstm/evaluations/") if k.endswith("/evaluation.json")]
    assert len(reports) == 1, world.s3.keys("convlstm/")
    report = json.loads(world.s3.read(reports[0]))
    assert report["data"]["windows"] == 16 and report["out"] == world.s3.uri(reports[0].rsplit("/", 1)[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_new_video_on_s3_is_retrained_and_the_promotion_decided(world, tmp_path):
    from pipelines.synthetic import write_kth_videos

    write_kth_videos(tmp_path / "new", persons=[12], actions=("boxing",), scenarios=("d1",), frames=20)
    world.s3.upload(tmp_path / "new", "raw", "kth")
    config = tmp_path / "retrain.yaml"
    config.write_text("train_config: kth-tiny\nworkers: 2\n"
                      f"train_overrides: ['registry.name={MODEL}', 'train.epochs=1', 'data.batch_size=4']\n")
    # The job's driver runs on the head, which shares this machine's disk: it reads the config from here.
    done = world.cluster.submit("retrain", "--task", "kth", "--src", world.raw["kth"], "--data",
                                world.s3.uri("data", "kth"), "--config", str(config), "--json", env=world.env)
    assert done.returncode == 0, done.output[-3000:]
    # --json prints one line; the Ray workers' forwarded output may come before or after it.
    report = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith('{"')))
    assert report["new_sources"] == ["person12_boxing_d1_uncomp"]
    assert report["status"] in ("promoted", "kept-champion") and report["decision"]["reason"]
    assert report["champion"]["version"] == "1" and report["challenger"]["version"] == "2"
    assert [k for k in world.s3.keys("convlstm/retrain/") if k.endswith("/retrain-report.json")]
    assert json.loads(world.s3.read("data/kth/manifest.json"))["splits"]["train"]["count"] == 20


# --- a worker node lost mid-training -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_worker_node_lost_after_a_checkpoint_finishes_on_the_survivor_in_the_same_run(world, monkeypatch):
    from mlflow import MlflowClient

    from cluster_harness import CONVLSTM

    cluster, s3 = world.cluster, world.s3
    before = {w["actor_id"] for w in cluster.actors("RayTrainWorker")}
    args = ["submit", "--address", cluster.head.address, "--wait", "--no-install", "--", "convlstm", "train",
            "--data", s3.uri("data", "kth"), *TRAIN_ARGS, "--run-name", "fault", *OVERRIDES, "train.epochs=4",
            "train.max_failures=2", "registry.name=convlstm-kth-fault"]
    job = subprocess.Popen([CONVLSTM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=client_env(cluster.head.token, **world.env))
    try:
        deadline = time.monotonic() + 600
        while not any(k.endswith("/checkpoint.pt") for k in s3.keys("convlstm/train/fault/")):
            assert job.poll() is None, "".join(job.communicate())[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.5)
        lost = cluster.nodes[1]
        lost_id = cluster.node_id(lost)
        cluster.kill_node(lost)
        out, err = job.communicate(timeout=900)
    finally:
        job.kill()
    assert job.returncode == 0, (out + err)[-4000:]
    # Resumed, not restarted from scratch: epoch 1 was run (and printed) by the first group only, as
    # epoch 4 by the second (Ray Train may print each line twice, the same for every epoch).
    assert out.count("epoch 4/4 ") >= 1 and out.count("epoch 1/4 ") == out.count("epoch 4/4 "), out[-4000:]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", world.server.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", world.server.admin[1])
    client = MlflowClient(world.server.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, filter_string="tags.mlflow.runName = 'fault'")
    assert run.info.status == "FINISHED"
    # Steps strictly increasing: no step logged twice (the restarted rank 0 logs only past the run's last step).
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss_epoch"))
    assert len(set(steps)) == len(steps) == 4, steps  # one point per epoch
    losses = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert len(set(losses)) == len(losses) and losses[-1] == steps[-1], losses
    versions = client.search_model_versions("name='convlstm-kth-fault'")
    assert [v.run_id for v in versions] == [run.info.run_id]  # registered once
    # First group: one worker per node; after the loss, a new group of two on the surviving node.
    new = [w for w in cluster.actors("RayTrainWorker") if w["actor_id"] not in before]
    on_lost = [w for w in new if w["node_id"] == lost_id]
    assert len(new) == 4 and len(on_lost) == 1, [(w["node_id"][:8], w.get("state")) for w in new]
