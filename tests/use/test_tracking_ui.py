"""The exported runs in MLflow's own UI: `mlflow ui` on a free port over the SQLite store that
`mnistbench track mlflow` wrote, its experiment's pages loaded in headless Chromium: every run
listed by name, and the kept model listed in "Logged models". Skipped without Chromium, except
under CI (as the report's browser test)."""

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
from tests.saved_models import synthetic_root, train
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
    store = make_store(tmp_path / "store.db")
    _, data = synthetic_root(tmp_path / "data")  # and a run that kept its model
    spec, result = train(data, tmp_path / "checkpoints", model="svm", kernel="linear")
    store.register("s", "kept", [spec])
    assert store.claim(spec.key()) and store.finish(spec.key(), result)
    store.close()
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
        pages = {
            tab: chromium(
                "--virtual-time-budget=20000", "--dump-dom",
                f"http://127.0.0.1:{port}/#/experiments/1/{tab}", user_dir=tmp_path,
            ).stdout
            for tab in ("runs", "models")
        }  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    lines = _visible_text(pages["runs"])
    expected = {SPECS[name].label() for name in ("sgd", "adam", "svm", "failed")} | {spec.label()}
    assert expected <= set(lines), f"runs not listed; the page said: {' '.join(lines)[:2000]}"
    assert re.search(r"\b5 matching runs", " ".join(lines))  # no other run listed
    models = _visible_text(pages["models"])
    assert f"svm-mnist-{spec.key()[:8]}" in models, f"the page said: {' '.join(models)[:2000]}"
    assert spec.label() in models  # its source run
