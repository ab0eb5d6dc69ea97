"""The main job: `databite-stream demo` runs end to end and shows results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def test_demo_runs_syncs_and_stops_cleanly(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABITE_BROKER": kafka_bootstrap, "COLUMNS": "160"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "databite_stream.cli",
            "demo",
            "--duration",
            "20",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    summary = re.search(r"stopped: (\d+) runs, (\d+) failed, (\d+) records", out)
    assert summary, out[-3000:]
    runs, _failed, records = (int(g) for g in summary.groups())
    assert runs >= 5, summary.group(0)
    assert records > 0, summary.group(0)
    assert "acme-crm" in out
    assert "umbrella-echo" in out or "umbrella-e" in out
