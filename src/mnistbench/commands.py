"""What the CLI's subcommands do, as plain functions with console output.

cli.py parses; these functions act and print. Library code stays free of printing policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mnistbench.config import RunResult, RunSpec, SpecError
from mnistbench.data.fetch import FetchError, fetch_dataset
from mnistbench.data.load import Dataset, DatasetNotFoundError, load_dataset
from mnistbench.data.pack import pack_dataset
from mnistbench.data.registry import DATASETS, UnknownDatasetError, get_dataset
from mnistbench.data.storage import ChecksumError, file_statuses, resolve_root
from mnistbench.progress import PlainReporter, RichReporter
from mnistbench.runner import run_spec

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UsageError(ValueError):
    """A bad value given by the user; the CLI exits with code 2 and this message."""


def _datasets(names: list[str]) -> list:
    try:
        return [get_dataset(name) for name in names] if names else list(DATASETS.values())
    except UnknownDatasetError as exc:
        raise UsageError(str(exc)) from exc


def fetch_datasets(names: list[str], root: Path | None, from_path: Path | None) -> int:
    """Fetch each dataset; print one line per attempt and a summary. 0 when all succeeded."""
    infos = _datasets(names)
    if from_path is not None and not from_path.exists():
        raise UsageError(f"--from {from_path}: no such file or directory")
    root = resolve_root(root)
    started = time.perf_counter()
    fetched, failed = [], []
    for info in infos:
        try:
            report = fetch_dataset(info, root, from_path=from_path, log=console.print)
            fetched.append(f"{info.name} from {report.source} ({report.seconds:.1f} s)")
        except FetchError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            failed.append(info.name)
    for line in fetched:
        console.print(f"[green]fetched[/green] {line}")
    console.print(f"done in {time.perf_counter() - started:.1f} s; data root: {root.resolve()}")
    if failed:
        err_console.print(f"[red]failed:[/red] {', '.join(failed)}")
        return 1
    return 0


def pack_datasets(names: list[str], root: Path | None, destination: Path) -> int:
    """Write verified .gz copies of the datasets to destination, for `data fetch --from`."""
    root = resolve_root(root)
    total = 0
    for info in _datasets(names):
        try:
            written = pack_dataset(info, root, destination)
        except (FileNotFoundError, ChecksumError) as exc:
            raise UsageError(str(exc)) from exc
        size = sum(path.stat().st_size for path in written)
        total += size
        console.print(f"packed {info.name}: 4 files, {_human_size(size)} in {written[0].parent}")
    console.print(
        f"{_human_size(total)} in {destination}; on the other machine: "
        f"mnistbench data fetch --from {destination}"
    )
    return 0


def _human_size(size: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def show_data_info(root: Path | None) -> int:
    """Print a table of every dataset file: present, verified, size. 0 when all are valid."""
    root = resolve_root(root)
    table = Table(title=f"datasets under {root.resolve()}")
    for column in ("dataset", "file", "present", "verified", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    all_valid = True
    problems = []
    for info in DATASETS.values():
        for status in file_statuses(root, info):
            all_valid &= status.verified
            size = _human_size(status.size) if status.size is not None else "-"
            verified = (
                "[green]yes[/green]"
                if status.verified
                else "[red]NO[/red]"
                if status.present
                else "-"
            )
            present = "yes" if status.present else "[yellow]no[/yellow]"
            table.add_row(status.dataset, status.filename, present, verified, size)
            if status.problem:
                problems.append(status.problem)
    console.print(table)
    for problem in problems:
        err_console.print(f"[red]{problem}[/red]")
    if not all_valid:
        console.print("some files are missing or invalid: run `mnistbench data fetch`")
    return 0 if all_valid else 1


def load_or_fetch(name: str, root: Path | None) -> Dataset:
    """Load a dataset; fetch it first (printing each source tried) when it is not there yet."""
    try:
        return load_dataset(name, root)
    except DatasetNotFoundError:
        info = get_dataset(name)
        err_console.print(f"{info.name} is not under {resolve_root(root)}: fetching it first")
        fetch_dataset(info, resolve_root(root), log=err_console.print)
        return load_dataset(name, root)


def make_spec(values: dict[str, Any]) -> RunSpec:
    """A RunSpec from CLI values; a bad value is a UsageError naming its flag."""
    try:
        return RunSpec(**values)
    except SpecError as exc:
        flag = "--" + exc.field_name.replace("_", "-")
        raise UsageError(f"{flag}: {exc}") from exc


def _summary_table(result: RunResult) -> Table:
    spec = result.spec
    table = Table(title=f"{spec['model']} on {spec['dataset']} ({spec['split']} split)")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def add(name: str, value: Any, fmt: str = "{}") -> None:
        if value is not None:
            table.add_row(name, fmt.format(value))

    add("status", result.status)
    add("test accuracy", result.test_accuracy, "{:.2f} %")
    add("val accuracy", result.val_accuracy, "{:.2f} %")
    add("train time", result.train_seconds, "{:.1f} s")
    add("eval time", result.eval_seconds, "{:.2f} s")
    add("throughput", result.images_per_second, "{:,.0f} img/s")
    add("FLOPs / image (fwd)", result.flops_per_image and result.flops_per_image / 1e9, "{:.3f} G")
    add("MACs / image (fwd)", result.macs_per_image and result.macs_per_image / 1e9, "{:.3f} G")
    add("training FLOPs", result.train_flops and result.train_flops / 1e12, "{:.2f} T")
    add("peak memory", result.peak_memory_bytes and result.peak_memory_bytes / 2**20, "{:,.0f} MiB")
    add("device", result.device)
    add("precision", result.amp if result.amp != "off" else None)
    add("back-end", result.backend)
    add("support vectors", result.n_support, "{:,}")
    add("resumed from epoch", result.resumed_from_epoch)
    add("note", result.message)
    return table


def train_one(
    values: dict[str, Any],
    root: Path | None,
    json_out: Path | None,
    checkpoint_dir: Path,
    quiet: bool,
) -> int:
    """`mnistbench train`: run one spec, print a summary, optionally write the RunResult JSON."""
    from mnistbench.models import SVMBackendUnavailableError
    from mnistbench.train_torch import DeviceUnavailableError

    spec = make_spec(values)
    data = load_or_fetch(spec.dataset, root)
    reporter = PlainReporter(err_console.print) if quiet else RichReporter(err_console)
    try:
        result = run_spec(spec, data, checkpoint_dir, reporter)
    except DeviceUnavailableError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        return 1
    except SVMBackendUnavailableError as exc:
        raise UsageError(f"--svm-backend: {exc}") from exc
    reporter.close()
    console.print(_summary_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
        console.print(f"result written to {json_out}")
    return 0 if result.status == "ok" else 1


def _load_study(path: Path):
    from mnistbench.studyfile import StudyFileError, load_study

    try:
        return load_study(path)
    except StudyFileError as exc:
        raise UsageError(str(exc)) from exc


def _select(study, only: list[str] | None) -> list:
    from mnistbench.studyfile import StudyFileError

    try:
        return study.select(only)
    except StudyFileError as exc:
        raise UsageError(str(exc)) from exc


def _open_store(path: Path):
    from mnistbench.store import Store, StoreError

    try:
        return Store(path)
    except StoreError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from exc


def study_run(
    path: Path,
    store_path: Path,
    *,
    only: list[str] | None,
    executor: str,
    jobs: int,
    retry_failed: bool,
    dry_run: bool,
    root: Path | None,
    ray_address: str | None,
    quiet: bool,
) -> int:
    """`mnistbench study run`: execute what is missing; 1 when a run failed in this invocation."""
    from mnistbench.study import run_study

    study = _load_study(path)
    selected = _select(study, only)
    if dry_run:
        return _dry_run(study, store_path, only)
    # Fetch what the runs need first, here, so that workers never race to download.
    for dataset in sorted({spec.dataset for e in selected for spec in e.specs()}):
        load_or_fetch(dataset, root)
    reporter = PlainReporter(err_console.print) if quiet else RichReporter(err_console)
    started = time.perf_counter()
    try:
        outcome = run_study(
            study,
            store_path,
            only=only,
            executor=executor,
            jobs=jobs,
            retry_failed=retry_failed,
            root=str(root) if root else None,
            ray_address=ray_address,
            reporter=reporter,
        )
    finally:
        reporter.close()
    console.print(
        f"study {study.name}: {outcome.done} run(s) done, {outcome.failed} failed, "
        f"{outcome.skipped} skipped, {outcome.already_done} already in the store "
        f"({time.perf_counter() - started:.0f} s); store: {store_path}"
    )
    if outcome.failed:
        err_console.print(
            "some runs failed: `mnistbench study status` lists them; "
            "`study run --retry-failed` runs them again"
        )
    return 1 if outcome.failed else 0


def _dry_run(study, store_path: Path, only: list[str] | None) -> int:
    store = _open_store(store_path) if store_path.exists() else None
    table = Table(title=f"study {study.name}: runs")
    for column in ("experiment", "run", "key", "status"):
        table.add_column(column)
    counts: dict[str, int] = {}
    for experiment in _select(study, only):
        for spec in experiment.specs():
            record = store.get(spec.key()) if store else None
            status = record.status if record else "pending"
            counts[status] = counts.get(status, 0) + 1
            table.add_row(experiment.name, spec.label(), spec.key(), status)
    console.print(table)
    console.print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if store:
        store.close()
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def study_status(path: Path | None, store_path: Path) -> int:
    """`mnistbench study status`: counts per experiment, with an ETA."""
    from mnistbench.study import status_rows

    study = _load_study(path) if path else None
    if not store_path.exists():
        raise UsageError(f"no results store at {store_path}; run `mnistbench study run FILE` first")
    with _open_store(store_path) as store:
        rows = status_rows(store, study)
    table = Table(title=f"results store {store_path}")
    columns = ("done", "failed", "skipped", "running", "pending")
    for column in ("study", "experiment", *columns, "eta"):
        table.add_column(column, justify="right" if column in columns else "left")
    for study_name, experiment, counts, eta in rows:
        table.add_row(study_name, experiment, *(str(counts[c]) for c in columns), _duration(eta))
    console.print(table)
    if not rows:
        console.print("the store has no runs" + (f" of study {study.name}" if study else ""))
    return 0


def report(store_path: Path, study: str | None, out_dir: Path, formats: str) -> int:
    """`mnistbench report`: build the study's report from the store and write each format."""
    from mnistbench.report import FORMATS, EmptyReportError, build_report, write_report

    chosen = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise UsageError(f"--format {formats!r}: choose from {', '.join(FORMATS)}")
    if not store_path.exists():
        raise UsageError(f"no results store at {store_path}; run `mnistbench study run FILE` first")
    descriptions: dict[str, str] = {}
    study_description = ""
    if study is not None and (study.endswith(".toml") or Path(study).is_file()):
        spec = _load_study(Path(study))  # a study file names the study and describes it
        study, study_description = spec.name, spec.description
        descriptions = {e.name: e.description for e in spec.experiments}
    with _open_store(store_path) as store:
        try:
            built = build_report(
                store,
                study,
                descriptions=descriptions,
                study_description=study_description,
                plots=bool({"md", "html"} & set(chosen)),  # CSV/JSON alone need no drawing
            )
        except EmptyReportError as exc:
            raise UsageError(str(exc)) from exc
    written = write_report(built, out_dir, chosen)
    console.print(f"[bold]{built.title}[/bold]: {built.status_line()}")
    for insight in built.headline:
        console.print(f"  - {insight.text}")
    shown = [p for p in written if p.suffix != ".png"]
    pngs = len(written) - len(shown)
    console.print(
        "wrote " + ", ".join(str(p) for p in shown) + (f" and {pngs} PNG plots" if pngs else "")
    )
    return 0
