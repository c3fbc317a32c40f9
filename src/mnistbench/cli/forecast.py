"""What a study will do and cost here: `study run --dry-run` and `study status FILE`'s tables
(each run's status and estimate, per experiment and for the study: counts, time, disk, skips),
and each search's trials and what the rest cost at most.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mnistbench.errors import EXIT_OK

if TYPE_CHECKING:
    from mnistbench.cost.search import SearchForecast
    from mnistbench.study.file import StudySpec
    from mnistbench.study.forecast import StudyForecast
    from mnistbench.study.store import Store


def dry_run(study: StudySpec, only: list[str] | None, store_path: Path) -> int:
    """List the runs, their status in the store (if there is one) and what each will cost
    here; then per experiment and for the study: counts, runs skipped here and why, time and
    disk. Writes nothing but the probe cache (calibration.json) next to the store."""
    from rich.table import Table

    from mnistbench.cli.console import console, duration
    from mnistbench.study.store import Store

    store = Store(store_path) if store_path.exists() else None
    try:
        forecast = study_forecast(study, only, store, store_path)
        searches = search_forecasts(study, only, store, store_path)
    finally:
        if store:
            store.close()
    overrides = " ".join(f"{key}={value!r}" for key, value in study.overrides.items())
    table = Table(
        title=f"study {study.name}: runs" + (f" with --set {overrides}" if overrides else "")
    )
    for column in ("experiment", "run", "key", "status", "time here"):
        table.add_column(column, justify="right" if column == "time here" else "left")
    counts: dict[str, int] = {}
    for run in forecast.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
        if run.skip is not None:
            here = "skipped here" if run.status != "skipped" else "-"
        elif run.actual is not None:
            here = f"took {duration(run.actual)}"
        else:
            here = duration(run.seconds) if run.runs_here else "-"
        table.add_row(run.experiment, run.label, run.key, run.status, here)
    console.print(table)
    console.print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    print_forecast(forecast, f"study {study.name} on this machine")
    print_searches(searches)
    return EXIT_OK


def search_forecasts(
    study: StudySpec, only: list[str] | None, store: Store | None, store_path: Path
) -> list[SearchForecast]:
    """Each searched experiment's trials so far and what the rest cost here at most."""
    from mnistbench.cli.console import err_console
    from mnistbench.cost.probe import Probes, cache_path_for
    from mnistbench.cost.search import forecast_searches

    if not any(experiment.search for experiment in study.select(only)):
        return []
    probes = Probes(cache_path_for(store_path), log=err_console.print)
    return forecast_searches(study, only, store_path, store, probes)


def print_searches(searches: list[SearchForecast]) -> None:
    from mnistbench.cli.console import console, duration

    for search in searches:
        counts = search.counts
        console.print(
            f"search {search.experiment}: {counts.asked} of {search.trials} trials asked "
            f"({counts.complete} complete, {counts.pruned} pruned, {counts.failed} failed, "
            f"{counts.running} running), {counts.left} left"
        )
        if search.to_run:
            at_most = search.seconds_at_most
            cost = f"at most {duration(at_most)} here" if at_most is not None else "no estimate"
            console.print(
                f"  {search.to_run} trial(s) to run: {cost} ({search.to_run} x the dearest "
                f"corner of its space, {search.dearest}; pruned trials cost less)"
            )


def study_forecast(
    study: StudySpec, only: list[str] | None, store: Store | None, store_path: Path
) -> StudyForecast:
    """The study's runs as this machine sees them, with their estimates (probing the speeds
    not in the cache next to the store first: about a second each, once per machine)."""
    from mnistbench.cli.console import err_console
    from mnistbench.cost.estimate import forecast_study
    from mnistbench.cost.probe import Probes, cache_path_for
    from mnistbench.study.run import expand

    probes = Probes(cache_path_for(store_path), log=err_console.print)
    keep = getattr(study, "keep_models", "all")
    return forecast_study(expand(study, only), store, probes, keep)


def print_forecast(forecast: StudyForecast, title: str) -> None:
    """Per experiment and for the whole study: counts, time here, disk; skip reasons."""
    from rich import box
    from rich.table import Table

    from mnistbench.cli.console import console, duration, human_size
    from mnistbench.study.forecast import COLUMNS

    table = Table(
        title=f"{title} (keep_models = {forecast.keep_models!r})",
        box=box.SIMPLE,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("experiment", *COLUMNS, "time here", "disk"):
        header = column.replace(" ", "\n")  # two-line headers: the table fits 80 columns
        justify = "left" if column == "experiment" else "right"
        table.add_column(header, justify=justify, no_wrap=True)
    for name in [*forecast.experiments(), None]:
        summary = forecast.summary(name)
        time_here = duration(summary.seconds) + (
            f" + {summary.unknown} ?" if summary.unknown else ""
        )
        cells = [str(summary.counts.get(c, 0)) for c in COLUMNS]
        table.add_row(
            name or "[bold]study[/bold]", *cells, time_here, human_size(summary.disk_bytes)
        )
    console.print(table)
    total = forecast.summary()
    for reason, count in total.skips.items():
        where = ", ".join(dict.fromkeys(r.experiment for r in forecast.runs if r.skip == reason))
        console.print(f"skipped here: {count} run(s) of {where}: {reason}")
    for run in forecast.runs:
        if run.runs_here and run.seconds is None:
            console.print(f"no estimate for {run.label}: {run.basis}")
    console.print(
        f"time here: {duration(total.seconds)} for the runs to do, one after another "
        f"(study run --jobs 1), of which {duration(forecast.overhead_seconds)} start-up and "
        f"data loading; disk: the final models that keep_models = {forecast.keep_models!r} keeps"
    )


def forecast_json(
    forecast: StudyForecast, searches: list[SearchForecast], name: str, store: Path
) -> dict[str, object]:
    """`study status FILE --json`: each experiment's summary and the study's, as the table;
    each search's trials and what the rest cost at most."""
    from dataclasses import asdict

    return {"study": name, "store": str(store), "keep_models": forecast.keep_models,
            "overhead_seconds": forecast.overhead_seconds,
            "experiments": [{"experiment": experiment, **asdict(forecast.summary(experiment))}
                            for experiment in forecast.experiments()],
            "total": asdict(forecast.summary()),
            "searches": [{"experiment": search.experiment, "trials": search.trials,
                          **asdict(search.counts), "seconds_at_most": search.seconds_at_most}
                         for search in searches]}  # fmt: skip
