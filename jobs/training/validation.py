"""Validation during training: each rank scores its own validation windows in float32 (no autocast),
and the sums and counts are merged over ranks by a SUM all-reduce, so every rank holds the
single-process result; with several pooled datasets, per dataset and pooled."""
from __future__ import annotations

import torch


def validate(task, model: torch.nn.Module, session, names: tuple[str, ...] = ()) -> tuple[dict, dict, dict, int]:
    """Evaluate this rank's validation windows in float32 and merge the sums over ranks (SUM
    all-reduce of every state array), so all ranks hold the single-process result. With several
    datasets (`names`), each one's windows get their own evaluator and the pooled scores come from
    the sum of their sums and counts: every window weighs as if one evaluator had read them all.
    Returns the scalar metrics (pooled `val_<metric>`; per dataset `val_<name>_<metric>`), the
    JSON-able evaluation (per dataset under `datasets`), a preview of the first window (rank 0) and
    the number of windows this rank read."""
    preview: dict = {}
    evaluators = []
    model.eval()
    with torch.no_grad():
        for index in range(max(len(names), 1)):
            evaluator = task.evaluator()
            for batch in session.val_batches(index):
                output = evaluator.update(model, batch)
                if not preview:
                    preview = task.preview(batch, output)
            evaluators.append(evaluator)
    rows = sum(evaluator.rows for evaluator in evaluators)
    pooled = task.evaluator()
    for evaluator in evaluators:
        _merge_ranks(evaluator, session)
        pooled.merge(evaluator)
    scalars, evaluation = pooled.compute()
    if names:
        evaluation["datasets"] = {}
        for name, evaluator in zip(names, evaluators):
            values, evaluation["datasets"][name] = evaluator.compute()
            scalars.update({f"val_{name}_{key.removeprefix('val_')}": value for key, value in values.items()})
    return scalars, evaluation, preview, rows


def _merge_ranks(evaluator, session) -> None:
    """Replace this rank's sums and counts by their sums over all ranks."""
    merged = {}
    for key, value in evaluator.state().items():
        tensor = torch.as_tensor(value, dtype=torch.float64, device=session.device)
        merged[key] = session.all_reduce_sum(tensor).cpu().numpy()
    evaluator.load_state(merged)
