"""`convlstm jobs list|status|logs|stop`: follow and control Ray jobs through the Jobs API."""
from __future__ import annotations

import argparse
import datetime as dt
import sys

from jobs.ops import submit as jobsubmit
from jobs.errors import CommandError
from jobs.cli import options
from jobs.registry.tracking import kill_job_runs, resolve_uri


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list, inspect, follow and stop Ray jobs",
                       description="Inspect the jobs of a Ray cluster (Jobs API, same address and auth "
                                   "token resolution as `convlstm submit`).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="all submitted jobs, oldest first")
    options.jobs_api_address(listing)
    for name, help_text in (("status", "status, timing and message of one job"),
                            ("logs", "driver output of one job"),
                            ("stop", "ask a running job to stop; end its MLflow runs as KILLED")):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("submission_id", metavar="ID")
        options.jobs_api_address(action)
        if name == "logs":
            action.add_argument("--follow", action="store_true", help="stream until the job ends")
        if name == "stop":
            action.add_argument("--reason", default="stopped by `convlstm jobs stop`",
                                help="why, recorded on the job's MLflow runs (ended KILLED)")
            options.tracking_uri(action)
    p.set_defaults(func=run)


def _time(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _job_or_error(client, submission_id: str):
    try:
        return client.get_job_info(submission_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc):
            raise ValueError(f"no job {submission_id!r} on this cluster") from None
        raise CommandError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    client = jobsubmit.connect(args.address)
    if args.action == "list":
        jobs = sorted((j for j in client.list_jobs() if j.submission_id), key=lambda j: j.start_time or 0)
        print(f"{'SUBMISSION ID':44s} {'STATUS':10s} {'STARTED':19s}  ENTRYPOINT")
        for job in jobs:
            started = _time(job.start_time)
            print(f"{job.submission_id:44s} {str(job.status):10s} {started:19s}  {job.entrypoint}")
        return 0
    job = _job_or_error(client, args.submission_id)
    if args.action == "status":
        print(f"submission_id  {job.submission_id}\nstatus         {job.status}\n"
              f"entrypoint     {job.entrypoint}\nstarted        {_time(job.start_time)}\n"
              f"ended          {_time(job.end_time)}\nmessage        {job.message or '-'}")
        return 0
    if args.action == "logs":
        if args.follow:
            jobsubmit.follow_logs(client, args.submission_id)
        else:
            sys.stdout.write(client.get_job_logs(args.submission_id))
        return 0

    stopped = client.stop_job(args.submission_id)
    print(f"stop requested for {args.submission_id}" if stopped
          else f"{args.submission_id} was not running ({job.status})")
    killed = kill_job_runs(args.tracking_uri, args.submission_id, args.reason)
    print(f"MLflow runs ended KILLED ({args.reason}): {', '.join(killed)}" if killed
          else f"no running MLflow run of {args.submission_id} in {resolve_uri(args.tracking_uri)}")
    return 0
