"""Training configs: packaged YAMLs load and validate; bad keys and values fail naming the key."""
from __future__ import annotations

import math

import pytest
import yaml

from jobs.cli import main
from manifests import manifest_of
from pipelines.manifest import Manifest
from jobs.tasks.plugins import BUILTIN
from jobs.training.config import CONFIG_DIR, flatten, from_dict, load_config
from jobs.training.optim import cosine_with_warmup

TASKS = BUILTIN  # the packaged tasks; tests may register more (test_task_plugin)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_packaged_configs_validate_and_round_trip(name):
    task = name.split("-")[0]
    cfg = load_config(name, task)
    assert cfg.task == task
    assert from_dict(cfg.to_dict()) == cfg
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_every_task_has_a_full_and_a_tiny_config():
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert {f"{t}{suffix}" for t in TASKS for suffix in ("", "-tiny")} <= names


def test_kth_config_is_the_tutorials():
    cfg = load_config(None, "kth")
    assert (cfg.optim.name, cfg.optim.lr) == ("adam", 3e-3)
    assert (cfg.schedule.name, cfg.schedule.warmup_steps, cfg.schedule.num_cycles) == ("cosine_warmup", 200, 2)
    assert (cfg.data.batch_size, cfg.data.hflip, cfg.train.epochs) == (32, True, 30)
    assert (cfg.train.monitor, cfg.train.mode) == ("val_accuracy", None)  # the mode follows the monitor


def test_radar_and_mnist_configs_are_the_papers():
    radar, mnist = load_config(None, "radar"), load_config(None, "mnist")
    for cfg in (radar, mnist):
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.alpha) == ("rmsprop", 1e-3, 0.9)
        assert cfg.train.patience is not None  # early stopping on validation
    assert radar.model.params["patch_size"] == 2
    assert mnist.model.params["patch_size"] == 4


def test_overrides_are_typed_and_applied():
    cfg = load_config("kth-tiny", "kth", ["optim.lr=3e-4", "train.epochs=3", "data.hflip=false",
                                          "train.grad_clip=1", "registry.name=my-model"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert (cfg.train.epochs, cfg.data.hflip, cfg.train.grad_clip) == (3, False, 1.0)
    assert cfg.registered_model_name == "my-model"
    assert flatten(cfg.to_dict())["optim.lr"] == 3e-4


@pytest.mark.parametrize("override, key", [
    ("optim.learning_rate=1", "optim.learning_rate"),   # unknown key
    ("optimiser.lr=1", "optimiser"),                     # unknown section
    ("optim.lr=-1", "optim.lr"),                         # out of range
    ("optim.lr=fast", "optim.lr"),                       # not a number
    ("train.epochs=2.5", "train.epochs"),                # not an integer
    ("train.mode=up", "train.mode"),                     # not a choice
    ("data.hflip=maybe", "data.hflip"),                  # not a bool
    ("optim.betas=0.9", "optim.betas"),                  # not a list
    ("optim=1", "optim"),                                # not a section
])
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ValueError, match=rf"^{key}\b"):
        load_config("kth-tiny", "kth", [override])


def test_config_for_another_task_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"task": "radar", "model": {"name": "x"}, "loss": {"name": "mse"}}))
    with pytest.raises(ValueError, match="^task"):
        load_config(str(path), "kth")


def test_cli_reports_config_errors_as_one_line_exit_2(tmp_path, capsys):
    code = main(["train", "--task", "kth", "--data", str(tmp_path), "--config", "kth-tiny", "optim.lrr=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "optim.lrr" in err and "unknown key" in err


def test_cosine_schedule_matches_the_hf_formula():
    assert cosine_with_warmup(0, 200, 1000, 2) == 0.0
    assert cosine_with_warmup(100, 200, 1000, 2) == 0.5
    assert cosine_with_warmup(200, 200, 1000, 2) == 1.0
    # two cycles: back at the top half-way through the decay, at zero a quarter of the way
    assert math.isclose(cosine_with_warmup(600, 200, 1000, 2), 1.0)
    assert math.isclose(cosine_with_warmup(400, 200, 1000, 2), 0.0, abs_tol=1e-12)


def test_forecast_tasks_need_two_input_frames():
    """One input frame leaves the encoder's state weights without a gradient, which breaks DDP."""
    from jobs.tasks import get_task

    with pytest.raises(ValueError, match=r"^data\.in_len: must be >= 2"):
        load_config("radar-tiny", "radar", ["data.in_len=1"])
    manifest = manifest_of("radar", params={"in_len": 1}, schema={"frames": {"shape": [4, 1, 8, 8], "dtype": "uint8"},
                                                                  "mask": {"shape": [4, 1, 8, 8], "dtype": "uint8"}})
    with pytest.raises(ValueError, match=r"^data\.in_len: needs >= 2 input frames"):
        get_task(load_config("radar-tiny", "radar"), manifest)
    assert get_task(load_config("radar-tiny", "radar", ["data.in_len=2"]), manifest).out_len == 2


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: kth\nmodel: {name: classifier\nloss: {name: cross_entropy}\n")
    with pytest.raises(ValueError, match=rf"^config {bad}:\d+: YAML syntax error"):
        load_config(str(bad), "kth")
    assert main(["train", "--task", "kth", "--data", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err
    assert main(["train", "--task", "kth", "--data", str(tmp_path), "--config", "kth-tiny", "optim.betas=[1,"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optim.betas" in err and "not valid YAML" in err


KTH_MANIFEST = manifest_of("kth", schema={"frames": {"shape": [4, 1, 6, 8], "dtype": "uint8"},
                                          "label": {"shape": [], "dtype": "int64", "classes": ["a", "b"]}})


def radar_manifest(height: int, width: int) -> Manifest:
    """The manifest of a radar dataset of 4-frame windows (2 in, 2 out) at height x width."""
    column = {"shape": [4, 1, height, width]}
    return manifest_of("radar", params={"in_len": 2},
                       schema={"frames": {**column, "dtype": "uint8"}, "mask": {**column, "dtype": "bool"}})


def test_dihedral_augmentation_turns_frames_and_mask_together():
    import torch

    from jobs.tasks import get_task

    manifest = radar_manifest(6, 6)
    task = get_task(load_config("radar-tiny", "radar", ["data.augment=dihedral"]), manifest)
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (8, 4, 1, 6, 6), dtype=torch.uint8)
    batch = {"frames": frames, "mask": frames > 100}
    turned = task._augmented(batch)
    assert torch.equal(turned["mask"], turned["frames"] > 100) and not torch.equal(turned["frames"], frames)
    assert get_task(load_config("radar-tiny", "radar"), manifest)._augmented(batch) is batch  # off by default

    oblong = radar_manifest(6, 8)
    with pytest.raises(ValueError, match="data.augment: dihedral needs square frames"):
        get_task(load_config("radar-tiny", "radar", ["data.augment=dihedral"]), oblong)
    kth = KTH_MANIFEST
    with pytest.raises(ValueError, match="data.augment: dihedral is for forecast tasks"):
        get_task(load_config("kth-tiny", "kth", ["data.augment=dihedral"]), kth)


def test_random_crops_cut_frames_and_mask_together_and_are_checked():
    import torch

    from jobs.tasks import get_task

    manifest = radar_manifest(6, 8)
    task = get_task(load_config("radar-tiny", "radar", ["data.crop=4", "data.augment=dihedral"]), manifest)
    frames = torch.randint(0, 256, (8, 4, 1, 6, 8), dtype=torch.uint8)
    cut = task._augmented({"frames": frames, "mask": frames > 100})
    assert cut["frames"].shape == (8, 4, 1, 4, 4) and torch.equal(cut["mask"], cut["frames"] > 100)
    with pytest.raises(ValueError, match=r"data.crop: 3 must fit .* divisible by model.params.patch_size \(2\)"):
        get_task(load_config("radar-tiny", "radar", ["data.crop=3"]), manifest)
    with pytest.raises(ValueError, match="data.crop: 8 must fit the dataset's 6x8 frames"):
        get_task(load_config("radar-tiny", "radar", ["data.crop=8"]), manifest)
    kth = KTH_MANIFEST
    with pytest.raises(ValueError, match="data.crop: random crops are for forecast tasks"):
        get_task(load_config("kth-tiny", "kth", ["data.crop=4"]), kth)


@pytest.mark.parametrize("task, metric, higher", [
    ("kth", "val_accuracy", True), ("kth", "val_loss", False),
    ("radar", "val_rainfall_mse", False), ("radar", "val_mch32_rainfall_mse", False),  # pooled: val_<dataset>_<metric>
    ("radar", "val_knmi_loss", False), ("radar", "val_mch32_csi_ge_0.5", True), ("radar", "val_far_ge_2", False),
    ("radar", "test_persistence_correlation", True), ("radar", "test_optical-flow_b_mae", False),
    ("mnist", "val_cross_entropy", False), ("mnist", "val_a_b_ssim", True),
])
def test_the_task_alone_says_which_way_a_metric_is_better(task, metric, higher):
    from jobs.tasks.plugins import task_class

    cls = task_class(task)
    assert cls.metric_higher_is_better(metric) is higher
    assert cls.monitor_mode(metric) == ("max" if higher else "min")



def test_rainfall_mse_is_a_radar_loss_only():
    import torch

    from jobs.tasks import get_task

    task = get_task(load_config("radar-tiny", "radar", ["loss.name=rainfall_mse"]), radar_manifest(6, 6))
    frames = torch.full((2, 4, 1, 6, 6), 200, dtype=torch.uint8)
    batch = {"frames": frames, "mask": torch.ones_like(frames, dtype=torch.bool)}
    model = lambda x: torch.zeros(x.shape[0], 2, 1, 6, 6)  # noqa: E731  a dry forecast
    rain = float(((10 ** ((200 * 70 / 255 - 10) / 10)) / 58.53) ** (1 / 1.56))
    assert float(task.loss(model, batch, train=False)) == pytest.approx((rain - 0.0169) ** 2 * 36, rel=1e-2)
    with pytest.raises(ValueError, match="loss.name: mnist trains with one of"):
        get_task(load_config("mnist-tiny", "mnist", ["loss.name=rainfall_mse"]),
                 manifest_of("mnist", schema={"frames": {"shape": [4, 1, 8, 8], "dtype": "uint8"}}))
