"""`convlstm nowcast`: the latest radar frames of an archive -> a forecast in dBZ and mm/h, PNGs and a GIF.

The input is read and preprocessed exactly as the model's training data were: the format conversion,
source grid, crop, output size and time step all come from the training manifest (the model's
lineage), and input that differs in any of them is refused (ValueError, exit 2) rather than
resampled; so is a gap among the `in_len` frames needed. Forecast frame k (1-based) is valid at
last input time + k * time step. Forecast pixels are nodata (NaN) where the last input frame is.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from convlstm.units import pixel_to_dbz, scaled_pixel_to_rainrate
from jobs import images, paths
from jobs.tasks import get_task
from jobs.training.config import from_dict
from pipelines import cluster, storage
from pipelines.radar.archive import source_folder
from pipelines.radar.timeline import infer_time_step, iso
from pipelines.manifest import Manifest

GIF_FRAME_MS = 500


def parse_time(text: str | None) -> datetime | None:
    """ISO 8601 time -> aware UTC datetime (a time without offset is UTC); None stays None."""
    if text is None:
        return None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at must be an ISO 8601 time such as 2016-07-11T23:00Z, got {text!r}") from None
    return time.replace(tzinfo=timezone.utc) if time.tzinfo is None else time.astimezone(timezone.utc)


def training_mismatches(fmt, grid: tuple[int, int] | None, step: timedelta | None, manifest: Manifest) -> list[str]:
    """How a source (format, source grid (H, W), frame interval) differs from the training manifest's."""
    encoding, trained_grid = manifest.encoding, manifest.grid
    problems = []
    if fmt.conversion != encoding["source_conversion"] or fmt.source_zr != encoding.get("source_zr"):
        problems.append(f"format {fmt.name} converts '{fmt.conversion}', the model was trained on "
                        f"{encoding['source_format']} data converted '{encoding['source_conversion']}'")
    expected = (trained_grid.source_height, trained_grid.source_width)
    if grid is not None and tuple(grid) != expected:
        problems.append(f"grid {grid[0]}x{grid[1]} differs from the training data's {expected[0]}x{expected[1]} "
                        f"(before crop {trained_grid.crop} and resize to {trained_grid.height}x{trained_grid.width})")
    if step is not None and step.total_seconds() != manifest.time_step_s:
        problems.append(f"time step {step.total_seconds():g} s differs from the training data's "
                        f"{manifest.time_step_s:g} s")
    return problems


def read_input(src: str | Path, fmt: str, at: datetime | None, manifest: Manifest,
               in_len: int) -> tuple[np.ndarray, np.ndarray, list[datetime]]:
    """The `in_len` frames ending at the latest frame at or before `at`, preprocessed like `manifest`.

    Returns (pixels uint8 `[in_len, 1, H, W]`, mask uint8 (1 = valid), frame times). ValueError when
    the source does not match the training data or a needed frame is missing or unusable.
    """
    # deferred: pipelines.radar.formats loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
    from pipelines.radar.formats import check_has_frames, list_frames, members_of, probe_frames, resolve_format
    # deferred: pipelines.radar.latest loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
    from pipelines.radar.latest import load_sequence

    with source_folder(Path(src), keep=members_of(fmt)) as root:
        check_has_frames(src, root, "nothing to forecast from")
        radar = resolve_format(fmt, root)
        frames = [f for f in list_frames(root, radar)[0] if at is None or f.time <= at]
        if not frames:
            when = iso(at) if at else "any time"
            raise FileNotFoundError(f"--src {src}: no {radar.name} frame at or before {when}")
        _, grid, _ = probe_frames(frames[-in_len:], radar)
        step = infer_time_step([f.time for f in frames]) if len(frames) > 1 else None
        problems = training_mismatches(radar, grid, step, manifest)
        if problems:
            raise ValueError(f"--src {src} does not match the model's training data: {'; '.join(problems)}")
        pixels, mask, times, gaps = load_sequence(root, radar.name, at, in_len, manifest.params,
                                                  manifest.time_step_s)
    if gaps:
        missing = ", ".join(f"{gap['time']} ({gap['reason']})" for gap in gaps)
        raise ValueError(f"--src {src}: {len(gaps)} of the {in_len} input frames up to {iso(times[-1])} "
                         f"are missing or unusable: {missing}")
    return pixels, mask, times


def forecast(model, task, pixels: np.ndarray, mask: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Input pixels/mask `[in_len, 1, H, W]` -> (dBZ, mm/h) float32 `[out_len, H, W]`, NaN = nodata.
    `task` (`jobs.tasks`) turns the model's output into [0, 1] frames as in training."""
    import torch  # deferred: torch ~5 s to import; the module's other users skip it

    # deferred: jobs.evaluation.inference loads torch ~5 s; the module's other users skip it
    from jobs.evaluation.inference import predict

    output = torch.from_numpy(predict(model, pixels[None].astype(np.float32) / 255.0, device=device))
    scaled = task.probabilities(output).clamp(0, 1).numpy()[0, :, 0]
    nodata = mask[-1, 0] == 0
    dbz = pixel_to_dbz(scaled * 255.0)
    rain = scaled_pixel_to_rainrate(scaled)
    dbz[:, nodata], rain[:, nodata] = np.nan, np.nan
    return dbz, rain


def write_outputs(out: Path, dbz: np.ndarray, rain: np.ndarray, valid_times: list[datetime], meta: dict) -> dict:
    """Write `forecast_dbz.npy`, `forecast_mmh.npy` (`[out_len, H, W]`, NaN = nodata), `forecast.json`
    (valid times and `meta`), one rain-rate PNG per lead time and `forecast.gif`; returns the sidecar."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "forecast_dbz.npy", dbz)
    np.save(out / "forecast_mmh.npy", rain)
    pictures = [images.colorize_rainrate(frame) for frame in rain]
    pngs = [images.write_png(out / f"rain_{time.strftime('%Y%m%dT%H%MZ')}.png", image).name
            for time, image in zip(valid_times, pictures)]
    images.write_gif(out / "forecast.gif", pictures, GIF_FRAME_MS)
    sidecar = {
        **meta,
        "valid_times": [iso(t) for t in valid_times],
        "arrays": {"forecast_dbz.npy": "reflectivity, dBZ", "forecast_mmh.npy": "rain rate, mm/h (Z = 58.53 R^1.56)"},
        "shape": "[lead, H, W], lead 0 = first forecast frame; NaN = nodata",
        "png": pngs, "gif": "forecast.gif",
    }
    (out / "forecast.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def default_out() -> str:
    """`<CONVLSTM_STORAGE>/nowcasts/<UTC time>`, else `<home>/outputs/nowcasts/<UTC time>`."""
    return paths.output_location("nowcasts", datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))


def load_radar_model(model_ref: str, tracking_uri: str | None = None):
    """(model, task, lineage info) of a radar model whose training manifest is readable (`info["manifest"]`);
    ValueError / FileNotFoundError naming --model otherwise."""
    # deferred: jobs.registry.modelio loads torch ~5 s; the module's other users skip it
    from jobs.registry.modelio import load_model

    model, info = load_model(model_ref, tracking_uri=tracking_uri)
    if info["task"] != "radar":
        raise ValueError(f"--model {model_ref} is a {info['task']} model; nowcasting needs a radar model")
    if info["manifest"] is None:
        raise FileNotFoundError(f"--model {model_ref}: its training manifest {info['manifest_path']} is not "
                                "readable, and the input must be preprocessed exactly as it says")
    return model, get_task(from_dict(info["config"]), info["manifest"]), info


def nowcast(model_ref: str, src: str | Path, out: str | Path | None = None, fmt: str = "auto",
            at: datetime | None = None, tracking_uri: str | None = None, address: str | None = None,
            device: str = "auto") -> dict:
    """Forecast from the latest frames of `src` with the radar model `model_ref`; returns the sidecar
    dict written to `<out>/forecast.json` (see `write_outputs`). `src` and `out` may be object-store
    URIs (outputs are written locally, then uploaded); `out` defaults to `default_out()`. On a
    multi-node cluster a node-local `out` is refused before any work (pipelines.cluster)."""
    defaulted = out is None
    out = default_out() if out is None else storage.as_uri(out)
    cluster.check_paths({"--out": out}, address=address, defaulted={"--out"} if defaulted else ())
    storage.check_writable(out)  # a read-only --out fails before the forecast, not after it

    model, task, info = load_radar_model(model_ref, tracking_uri)
    manifest = info["manifest"]
    pixels, mask, times = read_input(src, fmt, at, manifest, task.in_len)
    # deferred: jobs.evaluation.inference loads torch ~5 s; the module's other users skip it
    from jobs.evaluation.inference import resolve_device

    dbz, rain = forecast(model, task, pixels, mask, resolve_device(device))
    step = timedelta(seconds=manifest.time_step_s)
    valid_times = [times[-1] + step * k for k in range(1, len(dbz) + 1)]
    meta = {"model": model_ref, "run_id": info.get("run_id"), "data_fingerprint": info.get("data_fingerprint"),
            "manifest_path": info.get("manifest_path"), "source": str(src),
            "format": manifest.encoding["source_format"], "time_step_s": manifest.time_step_s,
            "input_times": [iso(t) for t in times]}
    with storage.staged_output(out, prefix="convlstm-nowcast-") as folder:
        return write_outputs(folder, dbz, rain, valid_times, meta)
