"""Training figures as PNG files (matplotlib, Agg backend): learning curve, confusion matrix,
frame strips of input / target / forecast."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib  # deferred: matplotlib ~5 s to import; the module's other users skip it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib ~5 s to import; the module's other users skip it

    return plt


def learning_curve(series: dict[str, Sequence[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """One panel per metric: `series` maps a metric name to `[(step, value), ...]` (optimizer steps
    on the x axis). Empty series are skipped; returns `path`."""
    plt = pyplot()
    shown = {k: v for k, v in series.items() if v}
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(4.5 * max(len(shown), 1), 3.4), squeeze=False)
    for ax, (name, points) in zip(axes[0], shown.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 40 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, path, title, dpi=100)


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Counts `[n, n]` (rows = true class, columns = predicted) with row-normalised colours."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 * n + 2.5, 1.0 * n + 1.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return _save(fig, path, "", dpi=100)


def frame_strip(rows: dict[str, np.ndarray], path: Path, title: str = "", cmap: str = "gray") -> Path:
    """One row of frames per entry (e.g. input, target, forecast); each array is `[T, H, W]` or
    `[T, 1, H, W]` in [0, 1]. Rows may differ in length; the grid is as wide as the longest."""
    plt = pyplot()
    frames = {name: np.asarray(a).reshape(len(a), *np.asarray(a).shape[-2:]) for name, a in rows.items()}
    cols = max(len(a) for a in frames.values())
    fig, axes = plt.subplots(len(frames), cols, figsize=(1.3 * cols, 1.4 * len(frames)), squeeze=False)
    for r, (name, seq) in enumerate(frames.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(seq):
                ax.imshow(seq[c], cmap=cmap, vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(name)
    return _save(fig, path, title, dpi=80)


def _save(fig, path: Path, title: str, dpi: int) -> Path:
    """Title (if any), tight layout, PNG at `dpi`; the figure is closed."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
