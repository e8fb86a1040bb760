"""Steps (4)-(7) of a retraining step (`jobs.ops.retrain`): score the champion, train a challenger,
score it the same way window by window, decide by the paired test (also against the `must_beat`
baselines), write the report, promote with one alias update as the last step, record the decision."""
from __future__ import annotations

from typing import Any

from jobs.ops import models
from jobs.ops.locks import RetrainLock
from jobs.ops.models import version_by_alias
from jobs.ops.promotion import Decision, PromotionRule, paired_test
from jobs.ops.retrain_config import RetrainConfig, RetrainOptions
from jobs.ops.retrain_report import report_target, stamp, write_report
from jobs.registry import history, tracking
from jobs.tasks import task_class
from pipelines import storage


def train_and_compare(task: str, data: str, train_cfg, config: RetrainConfig, report: dict, lock: RetrainLock,
                      options: RetrainOptions) -> dict[str, Any]:
    """Steps (4)-(7) of `jobs.ops.retrain` on the dataset version `data`, with `options`' tracking store,
    Ray address and report folder."""
    # deferred: jobs.training.driver loads torch ~5 s; the module's other users skip it
    from jobs.training.driver import Compute, RunOptions, train

    tracking_uri, address, out, log = options.tracking_uri, options.address, options.out, options.log
    name = train_cfg.registered_model_name
    client = tracking.client(tracking_uri)
    champion = version_by_alias(client, name, tracking.CHAMPION)
    cls = task_class(task)
    metric = config.metric or cls.primary_metric
    higher = cls.metric_higher_is_better(metric)
    target = report_target(out, name)
    scored = {}
    if champion is not None:  # scored first: a bad metric name fails before any training
        scored["champion"] = _score(name, str(champion.version), data, config, metric, target, tracking_uri, address)
    warm = config.init == "warm-start" and champion is not None
    log(f"training a challenger on {data} ({'warm-started from' if warm else 'from scratch; champion'} "
        f"{name} v{champion.version if champion else '-'})")
    summary = train(train_cfg, data, compute=Compute(workers=config.workers, use_gpu=config.use_gpu, address=address),
                    run=RunOptions(tracking_uri=tracking_uri, storage_path=config.storage,
                                   run_name=f"{task}-retrain-{stamp()}",
                                   init_from=f"models:/{name}/{champion.version}" if warm else None))
    challenger = str(summary.model_version)
    report["challenger"] = {"version": challenger, "run_id": summary.run_id,
                            "data_fingerprint": report["data"]["fingerprint"],
                            "init": "warm-start" if warm else "from-scratch"}
    report.update(metric=metric, higher_is_better=higher)
    if champion is None:
        log(f"{name} had no champion: version {challenger} was registered as champion")
        write_report({**report, "status": "first-champion"}, target, summary.run_id, tracking_uri, log)
        history.record(tracking_uri, history.AliasDecision(
            name, "first-champion", champion_before=None, champion_after=challenger, challenger=challenger,
            reason="the model had no champion", split=config.split, data_fingerprint=report["data"]["fingerprint"]))
        return {**report, "status": "first-champion"}

    scored["challenger"] = _score(name, challenger, data, config, metric, target, tracking_uri, address)
    decision = decide(scored, config, higher)
    report["champion"] = {"version": str(champion.version), "run_id": champion.run_id,
                          "score": scored["champion"]["value"],
                          "data_fingerprint": champion.tags.get("data_fingerprint", "")}
    report["challenger"]["score"] = scored["challenger"]["value"]
    report["baselines"] = {b: v for b, v in scored["challenger"]["baselines"].items()}
    report.update(decision={"promote": decision.promote, "reason": decision.reason, "p_value": decision.p_value,
                            "n": decision.n, "gain": decision.gain, "test": config.test,
                            "confidence": config.confidence, "min_windows": config.min_windows},
                  status="promoted" if decision.promote else "kept-champion")
    log(f"{metric} on {config.split}: champion v{champion.version} {_g(scored['champion']['value'])}, "
        f"challenger v{challenger} {_g(scored['challenger']['value'])}: {decision.reason}")
    write_report(report, target, summary.run_id, tracking_uri, log)
    if decision.promote:
        lock.verify()
        models.set_champion(tracking_uri, name, challenger)  # the last step that matters
        log(f"promoted {name} v{challenger} to @{tracking.CHAMPION}")
    else:
        log(f"kept {name} v{champion.version} as @{tracking.CHAMPION}")
    history.record(tracking_uri, history.AliasDecision(
        name, report["status"], champion_before=str(champion.version),
        champion_after=challenger if decision.promote else str(champion.version), challenger=challenger,
        reason=decision.reason, metric=metric, split=config.split,
        data_fingerprint=report["data"]["fingerprint"], p_value=decision.p_value, n=decision.n,
        scores={"champion": scored["champion"]["value"], "challenger": scored["challenger"]["value"],
                **scored["challenger"]["baselines"]}))
    return report


def _score(name: str, version: str, data: str, config: RetrainConfig, metric: str, target: str,
           tracking_uri: str | None, address: str | None) -> dict[str, Any]:
    """Evaluate `name` v`version` with the baselines on the split (report files under `target`, logged
    to the version's run and page); {value, baselines: {name: value}, per_window: {method: [...]}}."""
    # deferred: jobs.evaluation.evaluate loads OpenCV ~4 s, torch ~5 s; the module's other users skip it
    from jobs.evaluation.evaluate import DEFAULT_BASELINES, LogTo, Scoring, evaluate

    baselines = tuple(dict.fromkeys([*DEFAULT_BASELINES, *config.must_beat]))
    result = evaluate(f"models:/{name}/{version}", data, config.split, baselines,
                      out=storage.join(target, f"evaluation-v{version}"),
                      scoring=Scoring(address=address, per_window=metric),
                      log=LogTo(tracking_uri=tracking_uri, own_run=True))
    return {"value": result.summary()[metric],
            "baselines": {m: s.summary[metric] for m, s in result.baselines().items()},
            "per_window": result.per_window.methods}


def decide(scored: dict[str, dict], config: RetrainConfig, higher: bool) -> Decision:
    """The paired test against the champion, then against each `must_beat` baseline."""
    rule = PromotionRule(test=config.test, confidence=config.confidence, min_windows=config.min_windows,
                    margin=config.margin)
    challenger = scored["challenger"]["per_window"]["model"]
    decision = paired_test(scored["champion"]["per_window"]["model"], challenger, higher, rule)
    for baseline in config.must_beat if decision.promote else ():
        against = paired_test(scored["challenger"]["per_window"][baseline], challenger, higher, rule, against=baseline)
        if not against.promote:
            return Decision(False, against.reason, against.p_value, against.n, decision.gain)
    return decision


def _g(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.6g}"
