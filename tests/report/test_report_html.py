"""The HTML report in a real browser: headless Chromium loads it from disk, with no network, and
the test reads back the DOM it built: the tables and their cells, and every image decoded.

Skipped when /usr/bin/chromium is absent (Debian's `chromium` package), except under CI, which
installs it and fails when it is missing.
"""

from __future__ import annotations

import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mnistbench.report import build_report, write_report
from mnistbench.study.store import Store
from tests.report.test_report import STUDY, build_synthetic_store

pytestmark = pytest.mark.slow  # a real browser: seconds per page

CHROMIUM = Path("/usr/bin/chromium")

# Runs in the page after load: records on <body> whether every image decoded (naturalWidth > 0).
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter((img) => img.complete && img.naturalWidth > 0);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-decoded", String(decoded.length));
  document.body.setAttribute("data-table-count", String(document.querySelectorAll("table").length));
});
</script>"""


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90, check=True
    )


class DomReader(HTMLParser):
    """Tables (data-table -> rows of cell texts), img src values and body attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.body: dict[str, str | None] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.body = attributes
        elif tag == "table" and attributes.get("data-table"):
            self._table = attributes["data-table"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "img":
            self.images.append(attributes.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent: install Debian's chromium package to run this test"
        if os.environ.get("CI"):  # CI installs it (.ci/run): a missing browser is a failure there
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("html")
    with Store(build_synthetic_store(directory / "results.db")) as store:
        report = build_report(store, STUDY)
    write_report(report, directory / "out", ["html"])
    html = (directory / "out" / "report.html").read_text()
    probed = directory / "out" / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    return probed, len(report.plots)


def test_chromium_renders_tables_and_every_image(page: tuple[Path, int], tmp_path: Path) -> None:
    path, plots = page
    result = chromium("--virtual-time-budget=5000", "--dump-dom", path.as_uri(), user_dir=tmp_path)
    dom = DomReader()
    dom.feed(result.stdout)
    assert dom.body.get("data-images") == str(plots) == "12"
    assert dom.body.get("data-images-decoded") == str(plots), "an embedded PNG did not decode"
    assert all(src.startswith("data:image/png;base64,") for src in dom.images)

    grid = dom.tables["grid_mnist"]
    assert grid[0][:5] == ["batch size", "optimizer", "lr", "ResNet-18 %", "ResNet-18 published %"]
    assert grid[1][:4] == ["16", "SGD", "0.001", "98.20 ± 0.28"]
    assert grid[2][6] == "not run" and grid[3][6] == "failed"
    assert grid[4][6] == "95.00 (1/2 seeds; 1 diverged)"
    svm = dom.tables["svm"]
    assert svm[1][:7] == ["MNIST", "poly", "10", "97.61", "286.00", "9,000", "sklearn 1.5.0"]
    devices = dom.tables["devices"]
    assert devices[2][:4] == ["GPU (cuda)", "ResNet-18", "not run here (needs CUDA)", ""]
    assert int(dom.body["data-table-count"]) == 4  # the machine, then one per experiment


def _pixels_near(image, colour: tuple[int, int, int], tolerance: int) -> int:
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_chromium_screenshot_shows_the_plots(page: tuple[Path, int], tmp_path: Path) -> None:
    """The rendered page shows its plots, not only text: the accuracy heatmap's viridis ends and
    the curves' and bars' first two matplotlib colours are on screen (tall enough for them all)."""
    from PIL import Image

    path, _ = page
    shot = tmp_path / "shot.png"
    chromium(
        f"--screenshot={shot}", "--window-size=1280,9000", path.as_uri(), user_dir=tmp_path / "u"
    )
    with Image.open(shot) as image:
        assert image.size == (1280, 9000)
        heatmap_high = _pixels_near(image, (253, 231, 37), 30)  # viridis yellow: best cells
        heatmap_low = _pixels_near(image, (68, 1, 84), 20)  # viridis purple: worst cells
        first_series = _pixels_near(image, (31, 119, 180), 12)  # matplotlib C0
        second_series = _pixels_near(image, (255, 127, 14), 12)  # matplotlib C1
    assert heatmap_high > 5_000 and heatmap_low > 2_000
    assert first_series > 1_000 and second_series > 500
