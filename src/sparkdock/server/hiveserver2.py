"""The SQL endpoint client: statements over HiveServer2 (impyla), results as rows or pandas DataFrames.

sparkdock's HiveServer2 client is impyla (``auth_mechanism="PLAIN"`` with the cluster's user and password).
Users can bring PyHive, beeline or any JDBC/ODBC tool as well: the endpoint is a plain Spark Thrift Server.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import decimal
from dataclasses import dataclass
from typing import Any

DEFAULT_ROW_LIMIT = 1000


class SQLError(RuntimeError):
    """The SQL endpoint refused or failed a statement; the message is the server's."""


@dataclass
class SQLResult:
    """Columns and rows of a statement, capped at ``limit`` rows."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    limit: int

    def to_json(self) -> dict[str, Any]:
        """JSON form, as returned by ``POST sparkdock/api/jobs/{id}/sql``."""
        return {
            "columns": self.columns,
            "rows": [[_jsonable(v) for v in row] for row in self.rows],
            "row_count": len(self.rows),
            "truncated": self.truncated,
            "limit": self.limit,
        }

    def to_pandas(self) -> Any:
        """The result as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)


def _jsonable(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v) if v % 1 else int(v)
    if isinstance(v, _dt.datetime | _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _clean_error(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    # Spark's messages come wrapped in Hive/Thrift boilerplate; keep the informative part.
    for marker in ("org.apache.spark.sql.AnalysisException: ", "AnalysisException: ", "ParseException: "):
        if marker in msg:
            msg = msg.split(marker, 1)[1]
            break
    return msg.strip().splitlines()[0][:2000] if msg.strip() else type(exc).__name__


def run_statement(
    host: str,
    port: int,
    statement: str,
    *,
    user: str = "sparkdock",
    password: str | None = None,
    limit: int = DEFAULT_ROW_LIMIT,
    timeout: float = 300.0,
) -> SQLResult:
    """Run one statement on a SQL endpoint and fetch at most ``limit`` rows (blocking)."""
    from impala.dbapi import connect

    try:
        conn = connect(
            host=host,
            port=int(port),
            auth_mechanism="PLAIN",  # also what an unauthenticated (NONE) Thrift Server speaks
            user=user,
            password=password or "anonymous",
            timeout=timeout,
        )
    except Exception as exc:
        raise SQLError(f"cannot connect to the SQL endpoint {host}:{port}: {_clean_error(exc)}") from None
    try:
        cur = conn.cursor()
        try:
            cur.execute(statement)
            if not cur.description:
                return SQLResult([], [], False, limit)
            columns = [d[0].split(".", 1)[-1] for d in cur.description]
            rows = [list(r) for r in cur.fetchmany(limit + 1)]
        finally:
            _quiet(cur.close)
    except SQLError:
        raise
    except Exception as exc:
        raise SQLError(_clean_error(exc)) from None
    finally:
        _quiet(conn.close)
    truncated = len(rows) > limit
    return SQLResult(columns, rows[:limit], truncated, limit)


def _quiet(fn: Any) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection must not hide the real error
        fn()
