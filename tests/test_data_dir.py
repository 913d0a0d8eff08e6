"""The data directory 0700 and the job store 0600: created so, tightened when only readable by others, and a
server that refuses to start when someone else could write them."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparkdock.server.data_dir import UnsafePermissions, prepare_data_dir, prepare_store_file


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_data_dir_and_store_are_private(tmp_path):
    data = tmp_path / "a" / "sparkdock"
    prepare_data_dir(data)
    prepare_store_file(data / "jobs.db")
    assert _mode(data) == 0o700 and _mode(data / "jobs.db") == 0o600


def test_what_others_could_only_read_is_tightened(tmp_path, caplog):
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "jobs.db").write_text("")
    (data / "jobs.db").chmod(0o644)
    with caplog.at_level(logging.INFO, logger="sparkdock.server.data_dir"):
        prepare_data_dir(data)
        prepare_store_file(data / "jobs.db")
    assert _mode(data) == 0o700 and _mode(data / "jobs.db") == 0o600
    assert "readable by others (mode 0755); now 0700" in caplog.text


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o702])
def test_a_data_dir_others_could_write_is_refused(tmp_path, mode):
    data = tmp_path / "shared"
    data.mkdir()
    data.chmod(mode)
    with pytest.raises(UnsafePermissions, match=rf"is writable by .* \(mode {mode:04o}\).*chmod 700 {data}"):
        prepare_data_dir(data)
    assert _mode(data) == mode  # left as it was: the user decides


def test_a_store_others_could_write_or_someone_elses_is_refused(tmp_path):
    prepare_data_dir(tmp_path / "d")
    db = tmp_path / "d" / "jobs.db"
    db.write_text("")
    db.chmod(0o664)
    with pytest.raises(UnsafePermissions, match=r"job store .* writable by its group .*chmod 600"):
        prepare_store_file(db)
    db.chmod(0o600)
    os.chown(db, 65534, 65534)  # the tests run as root: hand it to nobody
    with pytest.raises(UnsafePermissions, match="belongs to user id 65534"):
        prepare_store_file(db)


def test_the_servers_data_dir_store_and_wal_are_private(jp_serverapp):
    manager = jp_serverapp.web_app.settings["sparkdock_manager"]
    data = manager.backend.data_dir
    manager.store.create("interactive", {"kind": "interactive", "cluster": {}})  # a write: the WAL exists
    db = Path(manager.store.path)
    assert _mode(data) == 0o700 and _mode(db) == 0o600
    companions = [p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    assert companions and all(_mode(p) == 0o600 for p in companions)


def test_the_server_refuses_to_start_on_a_group_writable_data_dir(tmp_path):
    data = tmp_path / "sparkdock"
    data.mkdir()
    data.chmod(0o775)
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"sparkdock": True}}}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--port=0", f"--ServerApp.root_dir={tmp_path}",
         f"--SparkDockApp.data_dir={data}"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )
    assert out.returncode != 0, out.stderr[-2000:]
    assert f"sparkdock cannot start: the sparkdock data directory {data} is writable by its group" in out.stderr
    assert f"chmod 700 {data}" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(("setting", "bad", "good", "says"), [
    ("history_retention_days", -1, 0, "must be 0 (keep forever) or more"),
    ("max_log_bytes_per_job", "512k", "1m", "must be a size of at least '1m'"),
    ("max_log_bytes_per_job", "lots", "2g", "must be a size of at least '1m', like '256m', not 'lots'"),
    ("event_queue_size", 0, 1, "must be at least 1"),
    ("webhook_retry_schedule", [5, 0], [0.5, 2], "must be at most 20 delays, each more than 0"),
    ("webhook_retry_schedule", ["soon"], [5, 300], "must be at most 20 delays, each more than 0"),
    ("webhook_retry_jitter", 1.5, 0, "must be between 0 and 0.9"),
    ("webhook_timeout", 0, 0.5, "must be between 0.1 and 60 seconds"),
    ("webhook_secret_grace", -1, 0, "must be 0 or more seconds"),
    ("webhook_allowed_networks", ["10.0.0.0/33"], ["10.0.0.0/8", "::1/128"], "must hold networks like '10.0.0.0/8'"),
])
def test_retention_and_log_cap_settings_are_validated(setting, bad, good, says):
    """The growth bounds are server settings (traitlets): a value that makes no sense is refused by name."""
    from sparkdock.server.app import SparkDockApp

    app = SparkDockApp()
    with pytest.raises(ValueError, match=re.escape(f"SparkDockApp.{setting} {says}")):
        setattr(app, setting, bad)
    setattr(app, setting, good)
    assert getattr(app, setting) == good
