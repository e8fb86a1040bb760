"""Human-readable evaluation outputs: `evaluation.md` tables and lead-time plots.

Evaluation results are `jobs.evaluation.result.EvaluationResult`s (`evaluation.json`): per method a
`summary` of scalars (averaged over lead times) and `per_lead` arrays (index 0 = first predicted frame).
Which metrics a table shows and which published figures sit beside it is the task's to say (`jobs.tasks`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs import plots
from jobs.evaluation.result import MODEL, EvaluationResult
from jobs.tasks import task_class

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


def evaluation_markdown(result: EvaluationResult) -> str:
    """The `evaluation.md` summary of an evaluation result: scores, skill, and the published figures."""
    data, ref = result.data, result.model.ref if result.model else None
    parts = [
        f"# Evaluation of `{ref}`\n" if ref else "# Evaluation of the baselines\n",
        f"- task: {result.task}; data: `{data.path}` (split `{data.split}`, {data.windows} windows, "
        f"fingerprint `{data.fingerprint}`)",
        f"- protocol: {_protocol_text(result.protocol)}",
        f"- primary metric: {result.primary_metric.name} "
        f"({'higher' if result.primary_metric.higher_is_better else 'lower'} is better)\n",
    ]
    parts += [f"- skipped {item.method}: {item.reason}" for item in result.skipped]
    parts += [f"- {line}" for line in baseline_verdicts(result)]
    if task_class(result.task).table_metrics:
        parts.append(_forecast_section(result))
    else:
        parts.append(_classification_section(result))
    parts.append(_published_section(result))
    return "\n".join(parts)


def baseline_verdicts(result: EvaluationResult) -> list[str]:
    """One line per baseline: whether the model beats it on the primary metric (mean over lead times);
    none when the baselines were scored alone (no model)."""
    if MODEL not in result.methods:
        return []
    name, higher = result.primary_metric.name, result.primary_metric.higher_is_better
    model = result.summary().get(name)
    lines = []
    for method, scores in result.baselines().items():
        value = scores.summary.get(name)
        if model is None or value is None or any(isinstance(v, float) and math.isnan(v) for v in (model, value)):
            verdict = "undefined"
        else:
            verdict = "beats" if (model > value if higher else model < value) else "does not beat"
        lines.append(f"the model {verdict} {method} on {name}: {format_value(model)} vs {format_value(value)}")
    return lines


def _protocol_text(protocol: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in protocol.items())


def _classification_section(result: EvaluationResult) -> str:
    scores = result.summary()
    classes = scores["classes"]
    lines = ["## Scores (ours)\n", f"Accuracy: {format_value(scores['accuracy'])}\n",
             markdown_table(("class", "precision", "recall"),
                            [(name, scores["precision"][i], scores["recall"][i]) for i, name in enumerate(classes)]),
             "\nConfusion matrix (rows = true class, columns = predicted):\n",
             markdown_table(("true \\ predicted", *classes),
                            [(name, *row) for name, row in zip(classes, scores["confusion_matrix"])])]
    return "\n".join(lines)


def _forecast_section(result: EvaluationResult) -> str:
    metrics = task_class(result.task).table_metrics
    methods, protocol = result.methods, result.protocol
    lines = ["## Scores (ours), mean over lead times of the per-lead scores (— = undefined, e.g. no events)\n",
             markdown_table(("method", *metrics),
                            [(name, *(m.summary.get(key) for key in metrics)) for name, m in methods.items()])]
    if "thresholds_mmh" in protocol:
        thresholds = protocol["thresholds_mmh"]
        lines += ["\n## CSI by threshold (mm/h, event when value >= threshold)\n",
                  markdown_table(("method", *(f"{t:g}" for t in thresholds)),
                                 [(name, *(m.summary[f"csi_ge_{t:g}"] for t in thresholds))
                                  for name, m in methods.items()])]
    if "fss_scales_px" in protocol:
        keys = [f"fss_ge_{t:g}_s{s}" for s in protocol["fss_scales_px"] for t in protocol["fss_thresholds_mmh"]]
        scored = next(iter(methods.values())).summary  # the model's, or the first baseline's without one
        keys = [key for key in keys if key in scored]
        lines += ["\n## Fractions skill score by threshold (mm/h, >=) and neighbourhood (pixels)\n",
                  markdown_table(("method", *(key.removeprefix("fss_ge_") for key in keys)),
                                 [(name, *(m.summary.get(key) for key in keys)) for name, m in methods.items()])]
    if result.skill:
        keys = list(dict.fromkeys(key for skill in result.skill.values() for key in skill.summary))
        lines += ["\n## Skill relative to persistence (mse/mae: 1 - model/persistence; csi: difference)\n",
                  markdown_table(("method", *keys),
                                 [(name, *(s.summary.get(key) for key in keys)) for name, s in result.skill.items()])]
    return "\n".join(lines)


def _published_section(result: EvaluationResult) -> str:
    tables = task_class(result.task).published_figures(result.protocol)
    if not tables:
        return ("\n## Published figures\n\nNone shares this protocol "
                f"({_protocol_text(result.protocol)}), so none is shown beside ours.\n")
    lines = ["\n## Published figures (the papers' numbers, not ours)\n"]
    for table in tables:
        lines += [f"{table['source']}:\n", markdown_table(table["header"], table["rows"])]
    return "\n".join(lines)


def plot_lead_times(result: EvaluationResult, out_dir: Path) -> list[Path]:
    """Scores against lead time, every method in each panel: `lead_scores.png` (continuous scores) and,
    for radar, `lead_categorical.png` (CSI/FAR/POD/HSS by threshold) and `lead_fss.png` (FSS, a row per
    neighbourhood size, a column per threshold); for KTH the confusion matrix."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not task_class(result.task).table_metrics:
        scores = result.summary()
        return [plots.confusion_matrix(scores["confusion_matrix"], scores["classes"], out_dir / "confusion_matrix.png",
                                       title=f"{result.data.split} split")]
    keys = list(next(iter(result.methods.values())).per_lead)
    continuous = [[key for key in keys if "_ge_" not in key]]
    categorical = [[key for key in keys if key.startswith(f"{score}_ge_")] for score in ("csi", "far", "pod", "hss")]
    paths = [_lead_grid(result, continuous, out_dir / "lead_scores.png")]
    if any(categorical):
        paths.append(_lead_grid(result, categorical, out_dir / "lead_categorical.png"))
    scales = result.protocol.get("fss_scales_px", ())
    fss = [[key for key in keys if key.startswith("fss_ge_") and key.endswith(f"_s{scale}")] for scale in scales]
    if any(fss):
        paths.append(_lead_grid(result, fss, out_dir / "lead_fss.png"))
    return paths


def _lead_grid(result: EvaluationResult, grid: list[list[str]], path: Path) -> Path:
    """One panel per metric key (rows x columns as in `grid`), one line per method."""
    plt = plots.pyplot()
    step_min = result.protocol.get("time_step_s", 0) / 60
    rows, cols = len(grid), max(len(row) for row in grid)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for r, row in enumerate(grid):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            for name, method in result.methods.items():
                values = np.array([np.nan if v is None else v for v in method.per_lead[row[c]]], dtype=float)
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
