"""Startup time of the command line: how long `mnistbench` takes before it does any real work.

Times `--help`, `--version`, `train --help` and `study status` (on an existing store with one
registered study) as subprocesses: one untimed warm run each (disk cache), then the median of
--runs timed runs. A second pass with `python -X importtime` says whether the command imported
torch. Prints a markdown table.

    python benchmarks/startup.py
    python benchmarks/startup.py --src /tmp/old/src   # another checkout's code, for a baseline
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "mnistbench --help": ["--help"],
    "mnistbench --version": ["--version"],
    "mnistbench train --help": ["train", "--help"],
    "mnistbench study status": ["study", "status", "--store", "{store}"],
}
# Run by the code under test, so that its store format is the one `study status` reads.
MAKE_STORE = """\
import sys
from mnistbench.config import RunSpec
from mnistbench.study.store import Store
with Store(sys.argv[1]) as store:
    specs = [RunSpec(model="svm", kernel=kernel, seed=seed) for kernel in ("rbf", "poly")
             for seed in range(3)]
    store.register("startup", "svm", specs)
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_once(argv: list[str], env: dict[str, str], importtime: bool = False) -> tuple[float, str]:
    """Wall seconds of one `python -m mnistbench ARGV`, and its stderr."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "mnistbench"]
    started = time.perf_counter()
    done = subprocess.run([*command, *argv], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stderr


def measure(argv: list[str], env: dict[str, str], runs: int) -> dict[str, object]:
    run_once(argv, env)  # warm: the files in the page cache, .pyc files written
    times = [run_once(argv, env)[0] for _ in range(runs)]
    _, imports = run_once(argv, env, importtime=True)
    modules = {line.rsplit("|", 1)[-1].strip() for line in imports.splitlines() if "|" in line}
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "torch": "torch" in modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command")
    parser.add_argument("--src", type=Path, default=None, help="put this src/ first on the path")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "startup.db")
        subprocess.run([sys.executable, "-c", MAKE_STORE, store], check=True, env=env)
        rows = {
            label: measure([word.format(store=store) for word in argv], env, args.runs)
            for label, argv in COMMANDS.items()
        }
    today = datetime.date.today().isoformat()
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; {today}"
    )
    print(f"median of {args.runs} runs after one warm run (`python -m mnistbench ...`)\n")
    print("| command | median | min | max | imports torch |")
    print("|---|---|---|---|---|")
    for label, row in rows.items():
        print(
            f"| `{label}` | {row['median']:.3f} s | {row['min']:.3f} s | {row['max']:.3f} s "
            f"| {'yes' if row['torch'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
