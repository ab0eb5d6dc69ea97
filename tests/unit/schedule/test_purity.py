"""The scheduling core must import without faust, aiokafka or mode."""

from __future__ import annotations

import subprocess
import sys


def test_schedule_imports_no_stream_framework() -> None:
    code = (
        "import sys, databite_stream.schedule\n"
        "bad = sorted(m for m in ('faust', 'aiokafka', 'mode') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
