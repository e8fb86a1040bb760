"""Human-readable outputs of evaluation and nowcasting: Markdown tables, lead-time plots, radar images.

Evaluation results are the dicts `jobs.evaluate.evaluate` writes to `evaluation.json`: per method a
`summary` of scalars (averaged over lead times) and `per_lead` arrays (index 0 = first predicted frame).
Radar images use a rain-rate palette in mm/h on log-spaced levels; nodata is grey, < 0.1 mm/h white.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs import plots

# Lower edges (mm/h) of the rain-rate classes and their colours; below the first edge = no rain.
RAIN_LEVELS_MMH = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0)
RAIN_COLOURS = (
    (200, 230, 255), (150, 200, 255), (80, 150, 255), (20, 90, 230), (0, 180, 60), (120, 220, 0),
    (255, 240, 0), (255, 160, 0), (255, 60, 0), (200, 0, 0), (200, 0, 200),
)
NO_RAIN_COLOUR = (255, 255, 255)
NODATA_COLOUR = (160, 160, 160)

RADAR_TABLE_METRICS = ("rainfall_mse", "rainfall_mae", "csi@0.5", "far@0.5", "pod@0.5", "hss@0.5", "correlation")
MNIST_TABLE_METRICS = ("cross_entropy", "mse", "mae", "ssim", "psnr")

# The paper's and benchmarks' own figures (see shared/reference/published-results.md), keyed by protocol.
_SHI_TABLE2 = {
    "source": "Shi et al. 2015, Table 2 (HKO radar echo, 5 -> 15 frames at 100x100)",
    "protocol": {"in_len": 5, "out_len": 15, "height": 100, "width": 100},
    "header": ("model", "rainfall_mse", "csi@0.5", "far@0.5", "pod@0.5", "correlation"),
    "rows": (
        ("ConvLSTM(3x3)-3x3-64-3x3-64", 1.420, 0.577, 0.195, 0.660, 0.908),
        ("ROVER1", 1.712, 0.516, 0.308, 0.636, 0.843),
        ("ROVER2", 1.684, 0.522, 0.301, 0.642, 0.850),
        ("ROVER3", 1.685, 0.522, 0.301, 0.642, 0.849),
        ("FC-LSTM-2000-2000", 1.865, 0.286, 0.335, 0.351, 0.774),
    ),
}
_HKO7_TRAJGRU = {
    "source": "HKO-7 benchmark (Shi et al. 2017), PyTorch TrajGRU reimplementation (5 -> 20 frames at 480x480)",
    "protocol": {"in_len": 5, "out_len": 20, "height": 480, "width": 480},
    "header": ("model", "csi@0.5", "csi@2", "csi@5", "csi@10", "csi@30"),
    "rows": (("TrajGRU", 0.5496, 0.4772, 0.3774, 0.2863, 0.1794),),
}
_SHI_TABLE1 = {
    "source": "Shi et al. 2015, Table 1 (Moving MNIST, 10 -> 10 frames at 64x64; cross-entropy summed over frames)",
    "protocol": {"in_len": 10, "out_len": 10, "height": 64, "width": 64, "digits": 2},
    "header": ("model", "cross_entropy"),
    "rows": (
        ("FC-LSTM-2048-2048", 4832.49),
        ("ConvLSTM(5x5)-5x5-256", 3887.94),
        ("ConvLSTM(5x5)-5x5-128-5x5-128", 3733.56),
        ("ConvLSTM(5x5)-5x5-128-5x5-64-5x5-64", 3670.85),
        ("ConvLSTM(9x9)-1x1-128-1x1-128", 4782.84),
        ("ConvLSTM(9x9)-1x1-128-1x1-64-1x1-64", 4231.50),
    ),
}
_OPENSTL_MNIST = {
    "source": "OpenSTL benchmark (Moving MNIST, 10 -> 10 frames at 64x64; MSE/MAE per-frame sums on [0, 1])",
    "protocol": {"in_len": 10, "out_len": 10, "height": 64, "width": 64, "digits": 2},
    "header": ("model", "mse", "mae", "ssim", "psnr"),
    "rows": (
        ("ConvLSTM-S, 200 epochs", 29.80, 90.64, 0.9288, 22.10),
        ("ConvLSTM-S, 2000 epochs", 22.41, None, 0.9480, None),
        ("PredRNN++", 14.07, None, 0.9698, None),
    ),
}
_KTH_TUTORIAL = {
    "source": "KTH action classification, the PyTorch tutorial's ConvLSTM classifier "
              "(validation accuracy on the tutorial split, 15-frame grey clips at 60x80)",
    "protocol": {"seq_len": 15, "channels": 1, "height": 60, "width": 80, "person_split": "tutorial", "split": "val"},
    "header": ("model", "accuracy"),
    "rows": (("tutorial ConvLSTM classifier, epoch 1", 0.518), ("tutorial ConvLSTM classifier, epoch 30", 0.655)),
}
_PUBLISHED = {"radar": (_SHI_TABLE2, _HKO7_TRAJGRU), "mnist": (_SHI_TABLE1, _OPENSTL_MNIST), "kth": (_KTH_TUTORIAL,)}


def published_figures(task: str, protocol: dict) -> list[dict]:
    """Published tables whose protocol (frame counts, grid) equals `protocol`; [] when none match."""
    return [table for table in _PUBLISHED.get(task, ())
            if all(protocol.get(key) == value for key, value in table["protocol"].items())]


def format_value(value) -> str:
    """A table cell: 4 significant digits for floats, '—' for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; cells go through `format_value`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_value(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def evaluation_markdown(result: dict) -> str:
    """The `evaluation.md` summary of an evaluation result: scores, skill, and the published figures."""
    data = result["data"]
    parts = [
        f"# Evaluation of `{result['model']['ref']}`\n",
        f"- task: {result['task']}; data: `{data['path']}` (split `{data['split']}`, {data['windows']} windows, "
        f"fingerprint `{data['fingerprint']}`)",
        f"- protocol: {_protocol_text(result['protocol'])}",
        f"- primary metric: {result['primary_metric']['name']} "
        f"({'higher' if result['primary_metric']['higher_is_better'] else 'lower'} is better)\n",
    ]
    parts += [f"- skipped {item['method']}: {item['reason']}" for item in result.get("skipped", ())]
    if result["task"] == "kth":
        parts.append(_classification_section(result))
    else:
        parts.append(_forecast_section(result))
    parts.append(_published_section(result))
    return "\n".join(parts)


def _protocol_text(protocol: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in protocol.items())


def _classification_section(result: dict) -> str:
    scores = result["methods"]["model"]["summary"]
    classes = scores["classes"]
    lines = ["## Scores (ours)\n", f"Accuracy: {format_value(scores['accuracy'])}\n",
             markdown_table(("class", "precision", "recall"),
                            [(name, scores["precision"][i], scores["recall"][i]) for i, name in enumerate(classes)]),
             "\nConfusion matrix (rows = true class, columns = predicted):\n",
             markdown_table(("true \\ predicted", *classes),
                            [(name, *row) for name, row in zip(classes, scores["confusion_matrix"])])]
    return "\n".join(lines)


def _forecast_section(result: dict) -> str:
    metrics = RADAR_TABLE_METRICS if result["task"] == "radar" else MNIST_TABLE_METRICS
    methods = result["methods"]
    lines = ["## Scores (ours), mean over lead times of the per-lead scores (— = undefined, e.g. no events)\n",
             markdown_table(("method", *metrics),
                            [(name, *(m["summary"].get(key) for key in metrics)) for name, m in methods.items()])]
    if result["task"] == "radar":
        thresholds = result["protocol"]["thresholds_mmh"]
        lines += ["\n## CSI by threshold (mm/h, event when value >= threshold)\n",
                  markdown_table(("method", *(f"{t:g}" for t in thresholds)),
                                 [(name, *(m["summary"][f"csi@{t:g}"] for t in thresholds))
                                  for name, m in methods.items()])]
    if result.get("skill"):
        keys = list(dict.fromkeys(key for skill in result["skill"].values() for key in skill["summary"]))
        lines += ["\n## Skill relative to persistence (mse/mae: 1 - model/persistence; csi: difference)\n",
                  markdown_table(("method", *keys),
                                 [(name, *(s["summary"].get(key) for key in keys))
                                  for name, s in result["skill"].items()])]
    return "\n".join(lines)


def _published_section(result: dict) -> str:
    tables = published_figures(result["task"], result["protocol"])
    if not tables:
        return ("\n## Published figures\n\nNone shares this protocol "
                f"({_protocol_text(result['protocol'])}), so none is shown beside ours.\n")
    lines = ["\n## Published figures (the papers' numbers, not ours)\n"]
    for table in tables:
        lines += [f"{table['source']}:\n", markdown_table(table["header"], table["rows"])]
    return "\n".join(lines)


def plot_lead_times(result: dict, out_dir: Path) -> list[Path]:
    """Scores against lead time, every method in each panel: `lead_scores.png` (continuous scores) and,
    for radar, `lead_categorical.png` (CSI/FAR/POD/HSS by threshold); for KTH the confusion matrix."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if result["task"] == "kth":
        scores = result["methods"]["model"]["summary"]
        return [plots.confusion_matrix(scores["confusion_matrix"], scores["classes"], out_dir / "confusion_matrix.png",
                                       title=f"{result['data']['split']} split")]
    keys = list(next(iter(result["methods"].values()))["per_lead"])
    continuous = [[key for key in keys if "@" not in key]]
    categorical = [[key for key in keys if key.startswith(f"{score}@")] for score in ("csi", "far", "pod", "hss")]
    paths = [_lead_grid(result, continuous, out_dir / "lead_scores.png")]
    if any(categorical):
        paths.append(_lead_grid(result, categorical, out_dir / "lead_categorical.png"))
    return paths


def _lead_grid(result: dict, grid: list[list[str]], path: Path) -> Path:
    """One panel per metric key (rows x columns as in `grid`), one line per method."""
    plt = plots.pyplot()
    step_min = result["protocol"].get("time_step_s", 0) / 60
    rows, cols = len(grid), max(len(row) for row in grid)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for r, row in enumerate(grid):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            for name, method in result["methods"].items():
                values = np.array([np.nan if v is None else v for v in method["per_lead"][row[c]]], dtype=float)
                leads = np.arange(1, len(values) + 1) * (step_min or 1)
                ax.plot(leads, values, marker="o", markersize=3, label=name)
            ax.set_xticks(leads if len(leads) <= 10 else leads[::len(leads) // 5])
            ax.set_title(row[c], fontsize=9)
            ax.grid(alpha=0.3)
            if r == rows - 1:
                ax.set_xlabel("lead time (min)" if step_min else "predicted frame")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def colorize_rainrate(rate: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Rain rate `[H, W]` in mm/h -> RGB uint8 `[H, W, 3]`; NaN or `valid == 0` is nodata (grey)."""
    rate = np.asarray(rate, dtype=np.float32)
    if rate.ndim != 2:
        raise ValueError(f"rate must be [H, W], got shape {rate.shape}")
    palette = np.array((NO_RAIN_COLOUR, *RAIN_COLOURS, NODATA_COLOUR), dtype=np.uint8)
    index = np.digitize(np.nan_to_num(rate, nan=0.0), RAIN_LEVELS_MMH)  # 0 = below 0.1 mm/h
    nodata = np.isnan(rate) if valid is None else np.isnan(rate) | (np.asarray(valid) == 0)
    index[nodata] = len(palette) - 1
    return palette[index]


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 `[H, W, 3]` image."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path)
    return Path(path)


def write_gif(path: Path, frames: Sequence[np.ndarray], duration_ms: int = 500) -> Path:
    """Write RGB uint8 `[H, W, 3]` frames as an endlessly looping animated GIF."""
    from PIL import Image

    if not frames:
        raise ValueError("frames must not be empty")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return Path(path)
