"""The ``%%sparksql`` cell magic (``%load_ext sparkdock``).

::

    %%sparksql
    SELECT sum(id) AS total FROM range(1000000)

    %%sparksql --limit 50 <job-id>
    SELECT * FROM range(1000)

Without a job id the single RUNNING interactive job is used (an error names them when there are none or
several). The statement runs through the server, so the cluster's SQL credentials never reach the kernel.
The result is displayed as a table (a pandas DataFrame); when it has more rows than the limit, a note below
the table says so.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from sparkdock.notebook.client import Client, InteractiveJob, SparkdockError, connect

DEFAULT_LIMIT = 1000

_client: Client | None = None


def _get_client() -> Client:
    global _client
    if _client is None:
        _client = connect()
    return _client


def set_client(client: Client | None) -> None:
    """Use ``client`` for ``%%sparksql`` (default: :func:`sparkdock.connect` on first use)."""
    global _client
    _client = client


class SparkSQLUsageError(SparkdockError):
    """Wrong ``%%sparksql`` arguments, or no single RUNNING cluster to use."""


def _parse(line: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="%%sparksql", add_help=False, exit_on_error=False)
    p.add_argument("--limit", "-l", type=int, default=DEFAULT_LIMIT)
    p.add_argument("job_id", nargs="?")
    try:
        args = p.parse_args(shlex.split(line))
    except (argparse.ArgumentError, SystemExit) as e:
        raise SparkSQLUsageError(f"usage: %%sparksql [--limit N] [job-id] ({e})") from None
    if args.limit < 1:
        raise SparkSQLUsageError("--limit must be a positive integer")
    return args


def resolve_cluster(client: Client, job_id: str | None) -> InteractiveJob:
    """The cluster named by ``job_id``, or the single RUNNING interactive job."""
    if job_id:
        job = client.job(job_id)
        if not isinstance(job, InteractiveJob):
            raise SparkSQLUsageError(f"job {job_id} is an automated job; %%sparksql needs an interactive one")
        return job
    running = client.running_clusters()
    if not running:
        raise SparkSQLUsageError("no RUNNING interactive cluster: launch one first, or pass a job id")
    if len(running) > 1:
        ids = ", ".join(j.id for j in running)
        raise SparkSQLUsageError(f"several RUNNING interactive clusters ({ids}): name one: %%sparksql <id>")
    return running[0]


def sparksql(line: str, cell: str, client: Client | None = None) -> Any:
    """Run the cell on a cluster's SQL endpoint and display the result; returns the DataFrame."""
    import pandas as pd
    from IPython.display import HTML, display

    args = _parse(line)
    statement = cell.strip().rstrip(";").strip()
    if not statement:
        raise SparkSQLUsageError("the cell is empty: write a SQL statement below %%sparksql")
    c = client or _get_client()
    cluster = resolve_cluster(c, args.job_id)
    res = cluster.sql_result(statement, limit=args.limit)
    df = pd.DataFrame(res.get("rows") or [], columns=res.get("columns") or [])
    df.attrs["truncated"] = bool(res.get("truncated"))
    display(df)
    if res.get("truncated"):
        n = len(df)
        msg = (f"Showing the first {n} rows: the result has more (row limit {res.get('limit', args.limit)}; "
               f"change it with %%sparksql --limit N).")
        display(HTML(f"<i>{msg}</i>")) if _rich() else print(msg)
    return None


def _rich() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and getattr(ip, "kernel", None) is not None
    except Exception:
        return False


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%sparksql``."""

    def _magic(line: str, cell: str) -> Any:
        try:
            return sparksql(line, cell)
        except SparkdockError as e:
            raise SparkdockError(f"%%sparksql: {e.message}") from None  # the server's message says it all

    _magic.__doc__ = __doc__
    ipython.register_magic_function(_magic, magic_kind="cell", magic_name="sparksql")
