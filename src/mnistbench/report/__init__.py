"""Reports: the study's tables beside the published study's, insights computed from the data,
plots, and Markdown/HTML/CSV/JSON.

    with Store("results/mnistbench.db") as store:
        report = build_report(store, "quick")
    write_report(report, Path("results/report"))

Modules in the order data flows: frame (the runs as one pandas table), compare (outliers and
like-with-like comparisons), tables, insights, plots, build (a Report), render (the writers;
the HTML page is the jinja2 template report.html.j2). `text` says how things are written.
"""

from mnistbench.report.build import EmptyReportError, Report, build_report
from mnistbench.report.render import FORMATS, write_report

__all__ = ["FORMATS", "EmptyReportError", "Report", "build_report", "write_report"]
