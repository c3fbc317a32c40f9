"""Writers: Markdown (PNGs next to it), one self-contained HTML file, CSV and JSON of all runs.

The HTML embeds its figures as base64 data URIs and its style inline, and loads nothing: it
opens from disk, offline, and can be mailed as one file.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as _dt
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.files import atomic_write_text
from mnistbench.report.build import Report, Section
from mnistbench.report.plots import Plot
from mnistbench.report.runs import Run
from mnistbench.report.sentences import Insight
from mnistbench.report.tables import Cell, Table

FORMATS = ("md", "html", "csv", "json")

# --- exports ------------------------------------------------------------------------------------

_SPEC_FIELDS = [f.name for f in dataclasses.fields(RunSpec)]
_RESULT_FIELDS = (
    "test_accuracy", "val_accuracy", "train_seconds", "eval_seconds", "images_per_second",
    "flops_per_image", "macs_per_image", "train_flops", "peak_memory_bytes", "peak_memory_kind",
    "backend", "n_support", "resumed_from_epoch",
)  # fmt: skip
_ENV_FIELDS = ("python", "torch", "cpu", "threads", "git_commit")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).isoformat(timespec="seconds")


def export_row(run: Run) -> dict[str, Any]:
    """One flat record per run: identity, status, spec, metrics, environment (no nesting)."""
    result = run.result
    canonical = run.spec.canonical()
    row: dict[str, Any] = {
        "study": run.study,
        "experiment": ";".join(run.experiments),
        "key": run.key,
        "store_status": run.status,
        "status": run.state,
        "error": (run.reason or None) if run.state != "ok" else None,
        "attempt": run.attempt,
        "host": run.host,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }
    # Fields the run's engine ignores are left empty: an SVM has no learning rate to report.
    for name in _SPEC_FIELDS:
        value = getattr(run.spec, name)
        row[name] = value if name in canonical or name == "threads" else None
    for name in _RESULT_FIELDS:
        row[name] = getattr(result, name) if result else None
    row["train_ms"] = (
        result.train_seconds * 1000 if result and result.train_seconds is not None else None
    )
    history = [e for e in (result.history if result else []) if e.ok]
    row["epochs_completed"] = len(history) if result else None
    row["final_train_loss"] = history[-1].train_loss if history else None
    row["device_used"] = result.device if result else None
    row["device_name"] = run.device_name if result else None
    row["precision"] = result.precision if result else None
    row["message"] = result.message if result else None
    env = result.environment if result else {}
    for name in _ENV_FIELDS:
        row[f"env_{name}"] = env.get(name)
    # Written by another mnistbench version: shown as stored rather than dropped.
    row["unknown_fields"] = json.dumps(run.unknown_fields) if run.unknown_fields else None
    return row


def write_csv(runs: list[Run], path: Path) -> None:
    rows = [export_row(run) for run in runs]
    columns = list(rows[0]) if rows else ["key"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_json(runs: list[Run], path: Path) -> None:
    """A list of flat records (`pandas.read_json(path)` gives one row per run)."""
    path.write_text(
        json.dumps([export_row(run) for run in runs], indent=1) + "\n", encoding="utf-8"
    )


# --- Markdown -----------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _numeric(table: Table, index: int) -> bool:
    return any(row[index].state != "key" for row in table.rows)


def md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in table.header) + " |"]
    lines.append(
        "|"
        + "|".join("---:" if _numeric(table, i) else "---" for i in range(len(table.header)))
        + "|"
    )
    lines += ["| " + " | ".join(_md_escape(c.text) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_table_block(table: Table, heading: str) -> list[str]:
    out = [f"{heading} {table.title}", "", md_table(table), ""]
    if table.footnote:
        out += [f"*{_md_escape(table.footnote)}*", ""]
    if table.notes:
        out += ["Missing or partial cells:", ""] + [f"- {note}" for note in table.notes] + [""]
    return out


def render_markdown(report: Report, image_names: dict[str, str]) -> str:
    out = [f"# {report.title}", ""]
    if report.description:
        out += [report.description, ""]
    out += [
        f"Generated {report.generated_at} from `{report.store_path}`: {report.status_line()}.",
        "",
    ]
    out += ["## Headline", ""] + [f"- {i.text}" for i in report.headline] + [""]
    out += ["## Insights", ""] + [f"- {i.text}" for i in report.insights] + [""]
    for table in report.effect_tables:
        out += _md_table_block(table, "###")
    out += ["## Results by experiment", ""]
    for section in report.sections:
        out += _md_table_block(section.table, "###")
        out += [f"> {note}" for note in section.notes] + ([""] if section.notes else [])
        for plot in section.plots:
            out += [f"![{plot.title}]({image_names[plot.slug]})", "", f"*{plot.caption}*", ""]
    if report.confusion:
        out += ["## Confusion matrices of the best runs", ""]
        for plot in report.confusion:
            out += [f"![{plot.title}]({image_names[plot.slug]})", "", f"*{plot.caption}*", ""]
    out += ["## Environment", "", "| | |", "|---|---|"]
    out += [f"| {label} | {_md_escape(value)} |" for label, value in report.environment] + [""]
    out += ["Every run, one row each: `runs.csv` and `runs.json` next to this file.", ""]
    return "\n".join(out)


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; }
h3 { margin-top: 28px; font-size: 17px; }
.meta { color: #555; } nav ul { columns: 2; font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #d0d0d0; padding: 4px 10px; }
th { background: #f2f4f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.missing { color: #8a5a00; background: #fff6e0; font-style: italic; text-align: center; }
td.diverged, td.failed { color: #a40000; background: #fdecec; }
td.partial { background: #fffbe6; }
p.footnote { font-size: 13px; color: #444; margin: 4px 0 8px; max-width: 1000px; }
ul.notes { font-size: 13px; color: #6b4a00; }
ul.insights li { margin-bottom: 6px; }
figure { margin: 16px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
.note { border-left: 4px solid #e0a800; background: #fffbe6; padding: 6px 12px; }
details { margin-top: 12px; } summary { cursor: pointer; font-weight: 600; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell_html(cell: Cell) -> str:
    if cell.state == "key":
        return f"<td>{_e(cell.text)}</td>"
    classes = {"ok": "num", "partial": "num partial", "n/a": "num"}.get(
        cell.state, f"missing {cell.state}"
    )
    title = f' title="{_e(cell.note)}"' if cell.note else ""
    return f'<td class="{_e(classes)}"{title}>{_e(cell.text)}</td>'


def html_table(table: Table, heading: str = "h3") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>" for row in table.rows)
    parts = [
        f'<{heading} id="{_e(table.slug)}">{_e(table.title)}</{heading}>',
        f'<table class="results" data-table="{_e(table.slug)}" data-kind="{_e(table.kind)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
    ]
    if table.footnote:
        parts.append(f'<p class="footnote">{_e(table.footnote)}</p>')
    if table.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in table.notes)
        parts.append(f'<ul class="notes" aria-label="missing cells">{items}</ul>')
    return "\n".join(parts)


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="{_e(plot.slug)}"><img src="data:image/png;base64,{data}" alt="{_e(plot.title)}">'
        f"<figcaption>{_e(plot.caption)}</figcaption></figure>"
    )


def _insight_list(items: Iterable[Insight]) -> str:
    return (
        '<ul class="insights">'
        + "".join(f'<li data-topic="{_e(i.topic)}">{_e(i.text)}</li>' for i in items)
        + "</ul>"
    )


def _section_html(section: Section) -> str:
    parts = [html_table(section.table)]
    parts += [f'<p class="note">{_e(note)}</p>' for note in section.notes]
    parts += [_figure(plot) for plot in section.plots]
    return '<section class="experiment">' + "\n".join(parts) + "</section>"


def _runs_table(runs: list[Run]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "experiment",
            "run",
            "seed",
            "status",
            "accuracy %",
            "train (s)",
            "device",
            "note",
        )
    )
    rows = []
    for run in runs:
        acc = f"{run.accuracy:.2f}" if run.accuracy is not None else run.state
        secs = f"{run.train_seconds:,.2f}" if run.train_seconds is not None else "—"
        device = (
            run.device_name
            if run.result
            else f"{run.spec.device if not run.spec.is_svm else 'cpu'} (not run)"
        )
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_e(v)}</td>"
                for v in (
                    ", ".join(run.experiments),
                    run.label(),
                    run.spec.seed,
                    run.state,
                    acc,
                    secs,
                    device,
                    run.reason,
                )
            )
            + "</tr>"
        )
    return (
        f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def render_html(report: Report) -> str:
    toc = "".join(
        f'<li><a href="#{_e(s.table.slug)}">{_e(s.table.title)}</a></li>' for s in report.sections
    )
    env = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in report.environment)
    body = [
        f"<h1>{_e(report.title)}</h1>",
        f'<p class="meta">{_e(report.description)}</p>' if report.description else "",
        f'<p class="meta">Generated {_e(report.generated_at)} from <code>{_e(report.store_path)}</code>: {_e(report.status_line())}.</p>',
        "<nav><ul><li><a href='#headline'>Headline</a></li><li><a href='#insights'>Insights</a>"
        f"</li>{toc}<li><a href='#confusion'>Confusion matrices</a></li>"
        "<li><a href='#environment'>Environment</a></li></ul></nav>",
        '<h2 id="headline">Headline</h2>',
        _insight_list(report.headline),
        '<h2 id="insights">Insights</h2>',
        _insight_list(report.insights),
        *(html_table(t) for t in report.effect_tables),
        '<h2 id="results">Results by experiment</h2>',
        *(_section_html(s) for s in report.sections),
    ]
    if report.confusion:
        body += [
            '<h2 id="confusion">Confusion matrices of the best runs</h2>',
            *(_figure(p) for p in report.confusion),
        ]
    body += [
        '<h2 id="environment">Environment</h2>',
        f'<table class="environment">{env}</table>',
        f"<details><summary>All {len(report.runs)} runs</summary>{_runs_table(report.runs)}</details>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(report.title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )


# --- all of it ----------------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write the chosen formats into out_dir; return the files written."""
    formats = list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in formats:
        names = {}
        for plot in report.plots:
            names[plot.slug] = f"{plot.slug}.png"
            (out_dir / names[plot.slug]).write_bytes(plot.png)
            written.append(out_dir / names[plot.slug])
        written.append(_write(out_dir / "report.md", render_markdown(report, names)))
    if "html" in formats:
        written.append(_write(out_dir / "report.html", render_html(report)))
    if "csv" in formats:
        write_csv(report.runs, out_dir / "runs.csv")
        written.append(out_dir / "runs.csv")
    if "json" in formats:
        write_json(report.runs, out_dir / "runs.json")
        written.append(out_dir / "runs.json")
    return written


def _write(path: Path, text: str) -> Path:
    # Atomically: a reader (a browser left open, CI) never sees half a report.
    atomic_write_text(path, text)
    return path
