"""The three notebooks, executed top to bottom with nbclient against the suite's JupyterLab server subprocess
(``lab_server``) with the sparkdock extension on the local backend (real Spark processes)."""

from __future__ import annotations

import re

import pytest

from sparkdock.demo import EXPECTED_TOTAL, Server, _errors, _outputs_text, execute_notebook, find_notebook

pytestmark = pytest.mark.spark


@pytest.fixture
def server(lab_server: Server) -> Server:
    """The suite's JupyterLab server (tests/lab_server.py); each notebook launches and ends its own cluster,
    as a user's would."""
    return lab_server


def _run(server: Server, name: str):
    nb = execute_notebook(find_notebook(name), server.url, server.token, server.root, timeout=900)
    assert _errors(nb) == []
    return nb, _outputs_text(nb)


def _html_outputs(nb) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") in ("display_data", "execute_result"))


def test_quickstart(server):
    nb, text = _run(server, "quickstart.ipynb")
    assert re.search(r"^state: RUNNING$", text, re.M)
    assert f"total: {EXPECTED_TOTAL}" in text
    assert "jdbc:hive2://" in text
    html = _html_outputs(nb)
    assert "square" in html and "Showing the first 5 rows" in html  # %%sparksql with its row cap
    assert re.search(r"^final state: COMPLETE$", text, re.M)


def test_automated_jobs(server):
    nb, text = _run(server, "automated-jobs.ipynb")
    assert re.search(r"^cluster \S+ RUNNING$", text, re.M)
    assert re.search(r"^state: COMPLETE$", text, re.M)
    assert f"total = {EXPECTED_TOTAL}" in text
    assert "state: EXECUTOR_ERROR" in text and "exit code: 18" in text and "action: " in text
    assert "JobFailed: 18" in text
    assert re.search(r"^final state: COMPLETE$", text, re.M)


def test_sql_endpoint(server):
    nb, text = _run(server, "sql-endpoint.ipynb")
    assert re.search(r"^state: RUNNING$", text, re.M)
    assert f"total: {EXPECTED_TOTAL}" in text
    assert "100 rows, truncated: True" in text
    assert "JDBC URL: jdbc:hive2://" in text
    assert f"beeline says: {EXPECTED_TOTAL}" in text  # a real beeline, with the cluster's password
    assert re.search(r"^final state: COMPLETE$", text, re.M)
