"""`convlstm submit`: run a `convlstm …` command line on a Ray cluster through the Jobs API."""
from __future__ import annotations

import argparse
import sys

from jobs.cli import options
from jobs.ops import submit as jobsubmit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit", help="submit a convlstm command to a Ray cluster (Jobs API)",
        description="Submit the command after `--` to a Ray cluster as a Ray job. By default this "
                    "checkout is uploaded as working_dir, the dependencies other than torch/ray are "
                    "pip-installed (--no-install: the image has them), and a leading `convlstm` runs as "
                    "`python -m jobs.cli`; --no-upload runs the image's installed convlstm. MLflow and "
                    "S3 settings (MLFLOW_TRACKING_URI, MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) "
                    "pass through; the auth token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                    "~/.ray/auth_token. With --wait, exits 0 SUCCEEDED, 1 FAILED, 3 STOPPED.",
        epilog="example: convlstm submit --address http://127.0.0.1:8265 --wait -- convlstm train --help")
    options.jobs_api_address(p)
    p.add_argument("--wait", action="store_true",
                   help="stream the job's logs and exit with its status (Ctrl-C detaches; the job keeps "
                        "running)")
    p.add_argument("--runtime-env", metavar="FILE.yaml", default=None,
                   help="base runtime_env (YAML mapping of Ray runtime_env keys); its env_vars override "
                        "the passed-through ones")
    p.add_argument("--submission-id", metavar="ID", default=None,
                   help="job id (default: convlstm-<subcommand>-<timestamp>-<6 hex>)")
    p.add_argument("--env", metavar="KEY=VALUE", action="extend", nargs="+", default=None,
                   help="environment variables for the job (repeatable; win over all other sources)")
    p.add_argument("--no-install", dest="install", action="store_false",
                   help="do not pip-install the project's dependencies: the cluster image has them")
    p.add_argument("--no-upload", dest="upload", action="store_false",
                   help="the cluster image has this project installed: upload and install nothing, run "
                        "the entrypoint as given")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="command line as it runs on the cluster, e.g. -- convlstm train ...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    argv = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    submission = jobsubmit.build_submission(
        argv, upload=args.upload, install=args.install, runtime_env_file=args.runtime_env,
        env=jobsubmit.parse_env_assignments(args.env), submission_id=args.submission_id)
    client = jobsubmit.connect(args.address)
    submission_id = jobsubmit.submit(client, submission)
    print(submission_id, flush=True)
    address = f" --address {jobsubmit.resolve_address(args.address)}"
    if not args.wait:
        print(f"follow it with:\n  convlstm jobs status {submission_id}{address}\n"
              f"  convlstm jobs logs {submission_id} --follow{address}\n"
              f"  convlstm jobs stop {submission_id}{address}", file=sys.stderr)
        return 0
    print(f"following {submission_id} (Ctrl-C detaches; `convlstm jobs stop {submission_id}{address}` "
          "stops it)", file=sys.stderr, flush=True)
    status = jobsubmit.follow_logs(client, submission_id)
    driver_code = client.get_job_info(submission_id).driver_exit_code
    detail = f" (entrypoint exit code {driver_code})" if driver_code not in (None, 0) else ""
    print(f"job {submission_id} {status}{detail}", file=sys.stderr)
    return jobsubmit.exit_code(status)
