"""The package builds without setuptools' warnings and ships the page's files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_builds_without_package_warnings_and_holds_the_page(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "absent from the `packages` configuration" not in output, output[-3000:]
    (wheel,) = tmp_path.glob("hz_rag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {p.name for p in (ROOT / "api" / "static").iterdir() if p.is_file()}
    assert {f"api/static/{name}" for name in static} <= names
    assert {"rag/normalize.py", "api/observability.py", "api/app.py"} <= names
    assert not any(n.startswith(("tests/", "index/", "corpus/", "eval/")) for n in names)
