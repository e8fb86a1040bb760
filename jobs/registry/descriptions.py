"""The markdown MLflow shows for runs, model versions and registered models: the text only (the
MLflow calls that set it are `jobs.registry.tracking`'s)."""
from __future__ import annotations

from typing import Any, Sequence

DIGEST_CHARS = 12  # of the 64-hex manifest fingerprint; MLflow caps digests at 36 characters
EVAL_TAG = "eval."  # version tag `eval.<split>`: that split's score line (see `score_line`)


def digest(fingerprint: str) -> str:
    """The short form of a dataset fingerprint shown everywhere (MLflow dataset digest, descriptions)."""
    return fingerprint[:DIGEST_CHARS]


def replace_line(text: str, marker: str, line: str) -> str:
    """`text` with its paragraph starting with `marker` replaced by `line` (appended when none does);
    paragraphs are separated by blank lines, so markdown renders each on its own."""
    kept = [p for p in text.split("\n\n") if p.strip() and not p.startswith(marker)]
    return "\n\n".join([*kept, line])


def score_line(split: str, windows: int, dataset: str, digest: str, scores: list[tuple[str, Any, dict]]) -> str:
    """`**test** (15 windows of mch32/test, 1a2b3c4d5e6f): rainfall_mse 1.23 (persistence 1.5,
    optical-flow 1.4); ...`: `scores` holds (metric, model value, {baseline: value})."""
    parts = []
    for name, value, baselines in scores:
        text = f"{name} {_fmt(value)}"
        if baselines:
            text += " (" + ", ".join(f"{method} {_fmt(v)}" for method, v in baselines.items()) + ")"
        parts.append(text)
    return f"**{split}** ({windows} windows of {dataset}, {digest}): " + "; ".join(parts)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def registered_model_text(versions: Sequence[Any], aliases: dict[str, list[str]], newest: int) -> str:
    """The registered model's description: what it is, how versions are ranked, then one paragraph per
    version (`versions`: MLflow model versions, newest first; the `newest` ones): aliases, data,
    validation score, and its score lines vs the baselines (`eval.<split>` tags)."""
    task = versions[0].tags.get("task", "?")
    lines = [f"ConvLSTM models for the **{task}** task, trained by `convlstm train` on Ray Train from Ray Data "
             f"shards. Each version comes from one run: its dataset inputs are the exact shards (digest = "
             f"the first {DIGEST_CHARS} hex digits of the manifest fingerprint), its LoggedModel holds the "
             f"validation and test scores; the newest {min(newest, len(versions))} of {len(versions)}:"]
    for v in versions[:newest]:
        tags = v.tags
        head = f"- **v{v.version}**" + "".join(f" @{a}" for a in sorted(aliases.get(str(v.version), [])))
        digests = ",".join(digest(f) for f in tags.get("data_fingerprint", "").split(","))
        head += (f": data {tags.get('dataset', '?')} ({digests}), "
                 f"{tags.get('monitor', 'score')} {tags.get('score', '?')} at epoch {tags.get('epoch', '?')}")
        evals = [tags[k] for k in sorted(tags) if k.startswith(EVAL_TAG)]
        lines.append(head + ("; " + "; ".join(evals) if evals else "; not evaluated yet (`convlstm evaluate --log`)"))
    return "\n".join(lines)
