"""The ``sparkdock`` command line: a small front end of :mod:`sparkdock.notebook.client`.

::

    sparkdock jobs [--kind interactive|automated] [--state RUNNING]
    sparkdock launch [--name N] [--workers N] [--worker-cores N] [--worker-memory 1g] [--wait]
    sparkdock terminate ID [--wait]
    sparkdock cluster-options [--json]
    sparkdock notifications ID [--json]
    sparkdock exit-codes
    sparkdock info

The server comes from ``--url``/``--token`` or ``SPARKDOCK_URL``/``SPARKDOCK_TOKEN``. What ``launch`` is not
given, the server's defaults give (``sparkdock cluster-options`` lists them).
"""

from __future__ import annotations

import argparse
import json
import sys

from sparkdock.notebook.client import Client, JobFailed, SparkdockError, connect
from sparkdock.notebook.widgets.render import ATTEMPT_HEAD, attempt_rows, fmt_duration, runtime_seconds, text_table


def _cmd_jobs(c: Client, a: argparse.Namespace) -> int:
    jobs = c.jobs(kind=a.kind, state=a.state)
    if a.json:
        print(json.dumps([j.data for j in jobs], indent=2))
        return 0
    rows = []
    for j in jobs:
        d = j.data
        rs = d.get("runtime_status") or {}
        flag = "".join(f for f, k in (("E", "error"), ("W", "warning")) if rs.get(k))
        rows.append([j.id, d["kind"], j.name, j.state, j.phase or "", "" if j.exit_code is None else str(j.exit_code),
                     fmt_duration(runtime_seconds(d)), flag])
    print(text_table(rows, ["ID", "KIND", "NAME", "STATE", "PHASE", "EXIT", "RUNTIME", "FLAGS"]) if rows else "no jobs")
    return 0


def _cmd_launch(c: Client, a: argparse.Namespace) -> int:
    job = c.launch_cluster(name=a.name, workers=a.workers, worker_cores=a.worker_cores,
                           worker_memory=a.worker_memory, idle_timeout=a.idle_timeout, image=a.image)
    print(f"launched {job.id} ({job.state})")
    if a.wait:
        job.wait(timeout=a.timeout)
        print(job.summary())
    return 0


def _cmd_terminate(c: Client, a: argparse.Namespace) -> int:
    job = c.job(a.id).terminate()
    print(f"{job.id}: {job.state}")
    if a.wait:
        job.wait(timeout=a.timeout)
        print(f"{job.id}: {job.state}")
    return 0


def _cmd_cluster_options(c: Client, a: argparse.Namespace) -> int:
    opts = c.cluster_options()
    if a.json:
        print(json.dumps(dict(opts), indent=2))
        return 0
    print(text_table(opts.rows(), ["OPTION", "DEFAULT", "ALLOWED"]))
    return 0


def _cmd_notifications(c: Client, a: argparse.Namespace) -> int:
    deliveries = c.job(a.id).notifications()
    if a.json:
        print(json.dumps(deliveries, indent=2))
        return 0
    if not deliveries:
        print(f"{a.id}: no notifications sent")
        return 0
    print(text_table(attempt_rows(deliveries), ATTEMPT_HEAD))
    return 0


def _cmd_exit_codes(c: Client, a: argparse.Namespace) -> int:
    cat = c.exit_codes()
    if a.json:
        print(json.dumps(cat, indent=2))
        return 0
    for e in cat["exit_codes"]:
        produced = "" if e.get("produced", True) else "  (not produced by sparkdock)"
        print(f"{e['code']:>3}  {e['state']:<15} {e['description']}{produced}\n     action: {e['action']}")
    print("\nkernel exit codes (qualify 18):")
    for k in cat.get("kernel_exit_codes", []):
        print(f"{k['code']:>3}  {k['description']}  action: {k['action']}")
    return 0


def _cmd_info(c: Client, a: argparse.Namespace) -> int:
    print(json.dumps(c.info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="sparkdock", description="Interactive Spark clusters and batch jobs.")
    p.add_argument("--url", help="Jupyter server URL (default: SPARKDOCK_URL)")
    p.add_argument("--token", help="Jupyter server token (default: SPARKDOCK_TOKEN)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("jobs", help="list jobs")
    s.add_argument("--kind", choices=["interactive", "automated"])
    s.add_argument("--state", help="a state, or several separated by commas")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_jobs)
    s = sub.add_parser("launch", help="launch an interactive cluster")
    s.add_argument("--name", default="")
    s.add_argument("--workers", type=int, help="default: the server's (sparkdock cluster-options)")
    s.add_argument("--worker-cores", type=int, help="default: the server's")
    s.add_argument("--worker-memory", help="a size like 512m or 2g; default: the server's")
    s.add_argument("--idle-timeout", type=float, help="seconds; default: the server's")
    s.add_argument("--image", help="default: the server's")
    s.add_argument("--wait", action="store_true", help="wait until RUNNING")
    s.add_argument("--timeout", type=float, default=900, help="seconds --wait waits (default 900)")
    s.set_defaults(fn=_cmd_launch)
    s = sub.add_parser("terminate", help="terminate a cluster or cancel a job")
    s.add_argument("id")
    s.add_argument("--wait", action="store_true", help="wait until it has ended")
    s.add_argument("--timeout", type=float, default=300)
    s.set_defaults(fn=_cmd_terminate)
    s = sub.add_parser("cluster-options", help="what a cluster may ask of the server, and its defaults")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_cluster_options)
    s = sub.add_parser("notifications", help="a job's notifications (webhooks, emails) and every attempt")
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_notifications)
    s = sub.add_parser("exit-codes", help="the exit-code catalog")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_exit_codes)
    s = sub.add_parser("info", help="server information")
    s.set_defaults(fn=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparkdock`` command."""
    a = build_parser().parse_args(argv)
    try:
        c = connect(a.url, a.token)
        try:
            return int(a.fn(c, a))
        finally:
            c.close()
    except JobFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except SparkdockError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
