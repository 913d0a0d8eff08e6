"""Run a SQL script on Spark, statement by statement.

Usage (as the application file of ``spark-submit``)::

    spark-submit [...] sql_runner.py SCRIPT.sql [--max-rows N]

Statements are separated by ``;`` outside quotes and comments. Each statement is echoed, run with
``spark.sql`` and, when it returns rows, up to ``--max-rows`` of them are printed. The first failing
statement stops the script: its error is printed (with Spark's error class, so the failure can be
classified) and the process exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements at ``;`` outside quotes, backquotes and comments.

    ``--`` line comments and ``/* */`` block comments are kept inside the statement they belong to
    (Spark ignores them); statements that hold only whitespace or comments are dropped.
    """
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    quote: str | None = None
    while i < n:
        c = script[i]
        if quote:
            buf.append(c)
            if c == "\\" and quote != "`" and i + 1 < n:
                buf.append(script[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c in ("'", '"', "`"):
            quote = c
            buf.append(c)
            i += 1
        elif script.startswith("--", i):
            end = script.find("\n", i)
            end = n if end < 0 else end
            buf.append(script[i:end])
            i = end
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            end = n if end < 0 else end + 2
            buf.append(script[i:end])
            i = end
        elif c == ";":
            statements.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(c)
            i += 1
    statements.append("".join(buf))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """True when a statement holds something other than whitespace and comments."""
    text = statement
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(text[i])
            i += 1
    return bool("".join(out).strip())


def _rows(df: object, limit: int) -> Iterator[str]:
    for row in df.limit(limit).collect():  # type: ignore[attr-defined]
        yield "\t".join("NULL" if v is None else str(v) for v in row)


def main(argv: list[str] | None = None) -> int:
    """Run the script named on the command line; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", help="path of the SQL script")
    parser.add_argument("--max-rows", type=int, default=100, help="rows printed per statement")
    opts = parser.parse_args(argv)
    with open(opts.script, encoding="utf-8") as fh:
        statements = split_statements(fh.read())
    if not statements:
        print(f"sparkdock sql_runner: {opts.script} holds no statement", file=sys.stderr)
        return 0

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("sparkdock-sql-script").getOrCreate()
    try:
        for number, statement in enumerate(statements, start=1):
            print(f"-- [{number}/{len(statements)}] {statement}", flush=True)
            try:
                df = spark.sql(statement)
                if df.columns:
                    print("\t".join(df.columns))
                    for line in _rows(df, opts.max_rows):
                        print(line)
                sys.stdout.flush()
            except Exception as exc:
                print(f"sparkdock sql_runner: statement {number} failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)
                return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
