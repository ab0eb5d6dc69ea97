"""Run every benchmark and write one summary (``benchmarks/results/summary-<profile>.md``).

``python benchmarks/run_all.py --quick`` (what ``make bench`` runs, < 10 minutes) or
``python benchmarks/run_all.py`` (the full profile, ``make bench-full``). Options after ``--``
go to ``bench_stream.py`` (e.g. ``-- --only throughput --worker-env DATABITE_LOG_LEVEL=warn``).

Runs ``bench_schedule.py`` (the pure core, no broker) and ``bench_stream.py`` (a real broker:
``DATABITE_BROKER`` or one it starts itself) as child processes, one after the other, so that
they never compete for the cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the < 10 minute profile")
    parser.add_argument("rest", nargs="*", help="extra arguments for bench_stream.py")
    args = parser.parse_args()
    profile = "quick" if args.quick else "full"
    flag = ["--quick"] if args.quick else []
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    print(f"== bench_schedule.py ({profile})", flush=True)
    core = subprocess.run(
        [sys.executable, str(HERE / "bench_schedule.py"), *flag],
        capture_output=True,
        text=True,
        check=False,
    )
    print(core.stdout, core.stderr, sep="", flush=True)
    (RESULTS / f"bench_schedule-{profile}-latest.txt").write_text(core.stdout)

    print(f"== bench_stream.py ({profile})", flush=True)
    stream = subprocess.run(
        [sys.executable, str(HERE / "bench_stream.py"), *flag, *args.rest], check=False
    )

    stream_md = RESULTS / f"bench_stream-{profile}-latest.md"
    summary = RESULTS / f"summary-{profile}.md"
    parts = [
        f"# databite-stream benchmarks ({profile} profile)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} in {time.monotonic() - t0:.0f}s "
        "by `benchmarks/run_all.py`.",
        "",
        "## Stream layer on a real broker (`bench_stream.py`)",
        "",
        stream_md.read_text() if stream_md.exists() else "(bench_stream.py wrote no table)",
        "## Pure scheduling core (`bench_schedule.py`)",
        "",
        "```",
        core.stdout.rstrip(),
        "```",
        "",
    ]
    summary.write_text("\n".join(parts))
    print(f"\nsummary: {summary}")
    return core.returncode or stream.returncode


if __name__ == "__main__":
    sys.exit(main())
