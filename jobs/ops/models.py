"""Registered models by hand: list them, read their alias history, promote a version, roll back.

Every alias change goes through `set_champion` (retrain's promotions too): `@champion` moves to the
version, `@challenger` is removed from it, the registered model's description is refreshed, and the
decision is recorded in the history (jobs.registry.history).
"""
from __future__ import annotations

from typing import Any

from jobs.registry import history, tracking


def list_models(tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """[{name, versions, champion, challenger, latest}] of every registered model, by name."""
    c = tracking.client(tracking_uri)
    rows = []
    for model in sorted(c.search_registered_models(max_results=1000), key=lambda m: m.name):
        versions = [int(v.version) for v in c.search_model_versions(f"name = '{model.name}'")]
        rows.append({"name": model.name, "versions": len(versions), "latest": str(max(versions)) if versions else None,
                     "champion": _alias(model, tracking.CHAMPION), "challenger": _alias(model, tracking.CHALLENGER)})
    return rows


def champion_of(tracking_uri: str | None, name: str) -> str | None:
    """The version behind `name@champion` (None without one); ValueError for an unknown model."""
    return _alias(_registered(tracking_uri, name), tracking.CHAMPION)


def set_champion(tracking_uri: str | None, name: str, version: str) -> None:
    """Move `@champion` to `version` and take `@challenger` off it (one model never carries both)."""
    c = tracking.client(tracking_uri)
    c.set_registered_model_alias(name, tracking.CHAMPION, version)
    if _alias(c.get_registered_model(name), tracking.CHALLENGER) == str(version):
        c.delete_registered_model_alias(name, tracking.CHALLENGER)
    tracking.describe_registered_model(tracking_uri, name)


def promote(tracking_uri: str | None, name: str, version: str, reason: str) -> dict[str, Any]:
    """Make `version` the champion by hand, recorded with `reason`; returns the history entry's fields."""
    model = _registered(tracking_uri, name)
    known = {str(v.version) for v in tracking.client(tracking_uri).search_model_versions(f"name = '{name}'")}
    if str(version) not in known:
        raise ValueError(f"--version {version}: {name} has versions {', '.join(sorted(known, key=int)) or 'none'}")
    before = _alias(model, tracking.CHAMPION)
    if before == str(version):
        raise ValueError(f"--version {version} is already {name}@{tracking.CHAMPION}")
    set_champion(tracking_uri, name, str(version))
    history.record(tracking_uri, history.AliasDecision(name, "promote", champion_before=before,
                                                       champion_after=str(version), reason=reason))
    return {"model": name, "champion_before": before, "champion_after": str(version), "reason": reason}


def rollback(tracking_uri: str | None, name: str, reason: str) -> dict[str, Any]:
    """Return `@champion` to the version that held it before the current champion took over (from the
    history); ValueError when the history holds no earlier champion."""
    current = champion_of(tracking_uri, name)
    took_over = [e for e in history.history(tracking_uri, name)
                 if e["champion_after"] == current and e["champion_before"] not in (None, current)]
    if current is None or not took_over:
        raise ValueError(f"{name}: no earlier champion in its history to roll back to "
                         f"(current champion: {current or 'none'})")
    previous = took_over[-1]["champion_before"]
    set_champion(tracking_uri, name, previous)
    history.record(tracking_uri, history.AliasDecision(name, "rollback", champion_before=current,
                                                       champion_after=previous, reason=reason))
    return {"model": name, "champion_before": current, "champion_after": previous, "reason": reason}


def _registered(tracking_uri: str | None, name: str):
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    try:
        return tracking.client(tracking_uri).get_registered_model(name)
    except MlflowException:
        raise ValueError(f"{name}: no such registered model in {tracking.resolve_uri(tracking_uri)}") from None


def _alias(model, alias: str) -> str | None:
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def version_by_alias(client, name: str, alias: str):
    """The ModelVersion behind `name@alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
