"""Writers: Markdown (PNGs beside it), one self-contained HTML page from the jinja2 template
`report.html.j2` (figures embedded as data URIs, style inline: it opens from disk, offline), and
the runs' table as CSV and JSON (one flat row per run).
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from mnistbench.config import RunSpec
from mnistbench.files import atomic_write_text
from mnistbench.report.build import Report
from mnistbench.report.frame import MISSING_STATES, NOT_EXPORTED
from mnistbench.report.plots import Plot
from mnistbench.report.tables import NOT_HERE, Table
from mnistbench.result import RunResult

FORMATS = ("md", "html", "csv", "json")
MARKDOWN = """\
# {{ r.title }}
{{ "\\n" ~ r.description ~ "\\n" if r.description }}
Generated {{ r.generated_at }} from `{{ r.store_path }}`: {{ r.status_line() }}.
{{ "\nCaveat: " ~ r.caveat ~ "\n" if r.caveat }}
## Machine

| | |
|---|---|
{% for key, value in r.environment %}| {{ key }} | {{ value | md }} |
{% endfor %}

## Headline

{% for i in r.headline %}- {{ i.text }}
{% endfor %}{% for what, path in r.best_models %}- Best model file: {{ what }}: `{{ path }}`
{% endfor %}

## Insights

{% for i in r.insights %}- {{ i.text }}
{% endfor %}

## Results by experiment
{% for s in r.sections %}

### {{ s.table.title }}
{{ "\\n" ~ s.exp.description ~ "\\n" if s.exp.description }}
{{ table(s.table) }}

{% for note in s.table.notes %}- {{ note | md }}
{% endfor %}{% for p in s.plots %}{{ p | figure }}{% endfor %}{% endfor %}
{% for s in r.searches %}

## Search: {{ s.experiment }}

Optuna study `{{ s.optuna_study }}` in `{{ s.storage }}`.

{% for line in s.lines %}- {{ line | md }}
{% endfor %}
{{ table(s.trials) }}

{% for note in s.trials.notes %}- {{ note | md }}
{% endfor %}{% if s.versus %}
{{ table(s.versus) }}

{% for note in s.versus.notes %}- {{ note | md }}
{% endfor %}{% endif %}{% for p in s.plots %}{{ p | figure }}{% endfor %}{% endfor %}
{% if r.confusion %}

## Confusion matrices of the best runs
{% for p in r.confusion %}{{ p | figure }}{% endfor %}{% endif %}

Every run, one row each: `runs.csv` and `runs.json` next to this file.
"""


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(table: Table) -> str:
    numbers = table.values.notna().any()
    lines = ["| " + " | ".join(map(_md, table.cells.columns)) + " |"]
    lines.append("|" + "|".join("---:" if numbers[h] else "---" for h in table.cells.columns) + "|")
    lines += [
        "| " + " | ".join(map(_md, row)) + " |" for row in table.cells.itertuples(index=False)
    ]
    return "\n".join(lines)


def cell_classes(table: Table) -> pd.DataFrame:
    """CSS classes: numbers right-aligned, missing cells marked with their state."""
    partial = table.cells.apply(lambda column: column.str.contains("seeds;", regex=False))
    classes = pd.DataFrame("", index=table.cells.index, columns=table.cells.columns)
    classes = classes.mask(table.values.notna(), "num").mask(partial, "num partial")
    here = table.cells.apply(lambda column: column.str.startswith(NOT_HERE, na=False))
    classes = classes.mask(here, "missing skipped")
    return classes.mask(table.cells.isin(MISSING_STATES), "missing " + table.cells)


def render_markdown(report: Report) -> str:
    environment = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True)
    environment.filters["md"] = _md
    environment.filters["figure"] = lambda p: f"\n![{p.title}]({p.slug}.png)\n\n*{p.caption}*\n"
    return environment.from_string(MARKDOWN).render(r=report, table=md_table)


def render_html(report: Report, out_dir: Path | None = None) -> str:
    """The page, from the package's template; model links are relative to `out_dir`."""
    template = resources.files("mnistbench.report").joinpath("report.html.j2").read_text("utf-8")
    environment = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)

    def link(path: str) -> str:
        target = Path(path).resolve()
        return os.path.relpath(target, out_dir.resolve()) if out_dir else target.as_uri()

    def image(plot: Plot) -> str:
        return "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")

    page = environment.from_string(template)  # zip: each cell's text beside its CSS classes
    return page.render(report=report, classes=cell_classes, zip=zip, link=link, image=image)


def whole_numbers(runs: pd.DataFrame) -> pd.DataFrame:
    """The integer fields of a spec and a result as integers: a column that is empty for some
    runs (batch_size for an SVM) is float in pandas, and would be written 16.0."""
    integers = [
        f.name
        for kind in (RunSpec, RunResult)
        for f in dataclasses.fields(kind)
        if str(f.type) in ("int", "int | None") and f.name in runs.columns
    ]
    integers += [name for name in runs.columns if name.endswith("_images")]
    return runs.astype({name: "Int64" for name in integers})


def write_report(report: Report, out_dir: Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write the chosen formats into out_dir; return the files written."""
    formats = list(formats)
    if unknown := [f for f in formats if f not in FORMATS]:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for plot in report.plots if "md" in formats else []:
        (out_dir / f"{plot.slug}.png").write_bytes(plot.png)
        written.append(out_dir / f"{plot.slug}.png")
    exports = whole_numbers(report.runs.drop(columns=list(NOT_EXPORTED)))
    texts = {
        "md": ("report.md", lambda: render_markdown(report)),
        "html": ("report.html", lambda: render_html(report, out_dir)),
        "csv": ("runs.csv", lambda: exports.to_csv(index=False)),
        # A list of flat records: `pandas.read_json(path)` gives one row per run back.
        "json": ("runs.json", lambda: exports.to_json(orient="records", indent=1) + "\n"),
    }
    for file, text in (texts[f] for f in FORMATS if f in formats):
        atomic_write_text(out_dir / file, text())  # a reader never sees half a file
        written.append(out_dir / file)
    return written
