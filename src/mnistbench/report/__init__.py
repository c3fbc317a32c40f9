"""Reports: the study's tables, insights computed from the data, plots, HTML/Markdown/CSV/JSON.

    with Store("results/mnistbench.db") as store:
        report = build_report(store, "quick")
    write_report(report, Path("results/report"))

Modules, in the order data flows: runs (the store's runs, grouped across seeds), tables (the
published study's tables), sentences (what insight sentences are made of), headline, effects and
outliers (the sentences), plots (matplotlib PNGs), build (assembles a Report), render (writers).
"""

from mnistbench.report.build import EmptyReportError, Report, Section, build_report
from mnistbench.report.render import FORMATS, render_html, render_markdown, write_report

__all__ = [
    "FORMATS",
    "EmptyReportError",
    "Report",
    "Section",
    "build_report",
    "render_html",
    "render_markdown",
    "write_report",
]
