"""The retrain report: what one retraining step found and decided, written as strict JSON to
`<target>/retrain-report.json` and logged to the challenger's MLflow run."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable

from jobs import paths
from jobs.jsonable import to_jsonable
from jobs.ops.retrain_config import RetrainConfig
from jobs.registry import tracking
from pipelines import storage
from pipelines.manifest import Manifest

REPORT_NAME = "retrain-report.json"


def new_report(task: str, data: str, manifest: Manifest, name: str, config: RetrainConfig, new: list[str]) -> dict:
    """The report's start: the task, model, data as found and the new sources; the steps add the rest."""
    return {
        "task": task, "registered_model": name, "started": _now(), "new_sources": new,
        "data": {"path": data, "previous_fingerprint": manifest.fingerprint, "fingerprint": manifest.fingerprint},
        "split": config.split, "margin": config.margin, "config": config.model_dump(mode="json"),
    }


def report_target(out: str | None, name: str) -> str:
    """Where this run's report goes: `out`, else `<CONVLSTM_STORAGE>/retrain/<model>/<time>`, else under
    the project outputs."""
    return storage.as_uri(out) if out else paths.output_location("retrain", name, stamp())


def write_report(report: dict, target: str, run_id: str | None, tracking_uri: str | None,
                 log: Callable[[str], None]) -> dict:
    """Write the report to `<target>/retrain-report.json` (strict JSON) and log it to the challenger's run."""
    report["finished"] = _now()
    with storage.staged_output(target, prefix="convlstm-retrain-") as folder:  # a URI: written here, uploaded
        path = folder / REPORT_NAME
        path.write_text(json.dumps(to_jsonable(report), indent=1, allow_nan=False) + "\n")
        if run_id:
            tracking.log_artifacts(tracking_uri, run_id, [path])
    log(f"report: {storage.join(target, REPORT_NAME) if storage.is_remote(target) else path}")
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
