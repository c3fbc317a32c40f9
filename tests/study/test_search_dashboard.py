"""optuna-dashboard opens on a search's storage and lists its trials: through its API, and in
headless Chromium where the machine has one (the page is drawn by JavaScript)."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from mnistbench.study.search import storage_path, storage_url

pytestmark = pytest.mark.slow

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dashboard_lists_the_trials_of_a_search(tmp_path: Path) -> None:
    store_path = tmp_path / "runs.db"
    study = optuna.create_study(study_name="demo.find.0123abcd", storage=storage_url(store_path),
                                direction="maximize")  # fmt: skip
    for value in (71.5, 88.25, 80.0):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        study.tell(trial, value)
    assert storage_path(store_path).exists()

    port = _free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen(
        [str(dashboard), storage_url(store_path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        summaries = json.loads(_get(f"{base}/api/studies", time.monotonic() + 60))
        (summary,) = summaries["study_summaries"]
        assert summary["study_name"] == "demo.find.0123abcd"
        detail = json.loads(
            _get(f"{base}/api/studies/{summary['study_id']}", time.monotonic() + 30)
        )
        assert sorted(t["values"][0] for t in detail["trials"]) == [71.5, 80.0, 88.25]
        if CHROMIUM is None:
            pytest.skip("no Chromium here: the API lists the trials; the page was not drawn")
        page = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
             "--dump-dom", f"{base}/dashboard/studies/{summary['study_id']}/trials"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        for number in range(3):
            assert f"Trial {number}" in page.stdout, page.stdout[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=10)
