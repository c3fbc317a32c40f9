"""The exported runs in MLflow's own UI: `mlflow ui` on a free port over the SQLite store that
`mnistbench track mlflow` wrote, its experiment page loaded in headless Chromium, every run
listed by name. Skipped without Chromium, except under CI (as the report's browser test)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mnistbench.cli import main
from tests.report.test_report_html import CHROMIUM, chromium
from tests.use.test_tracking import SPECS, free_port, make_store

pytestmark = pytest.mark.slow  # a server and a browser: a minute

START_SECONDS = 240  # mlflow ui starts in seconds alone, in minutes on a busy 2-core machine


def _wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow ui exited {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mlflow ui did not answer within {START_SECONDS} s: {log.read_text()[-2000:]}")


def _visible_text(dom: str) -> list[str]:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S)
    return [line.strip() for line in re.sub(r"<[^>]+>", "\n", text).splitlines() if line.strip()]


def test_mlflow_ui_lists_every_exported_run(tmp_path, capsys) -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent: install Debian's chromium package to run this test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    make_store(tmp_path / "store.db").close()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["track", "mlflow", "--store", str(tmp_path / "store.db"), "--study", "s",
                 "--tracking-uri", uri]) == 0  # fmt: skip
    assert f"mlflow ui --backend-store-uri {uri}" in capsys.readouterr().out

    port, log = free_port(), tmp_path / "mlflow-ui.log"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("w") as output:
        # Its own process group: the server's workers go with it at the end.
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", server, log)
        page = f"http://127.0.0.1:{port}/#/experiments/1/runs"
        dom = chromium("--virtual-time-budget=20000", "--dump-dom", page, user_dir=tmp_path).stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    lines = _visible_text(dom)
    expected = {SPECS[name].label() for name in ("sgd", "adam", "svm", "failed")}
    assert expected <= set(lines), f"runs not listed; the page said: {' '.join(lines)[:2000]}"
    assert re.search(r"\b4 matching runs", " ".join(lines))  # no other run listed
