"""`geoscout` creates a missing $DAGSTER_HOME (with the project's dagster.yaml) and ends an
unusable one in one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _geoscout(args: list[str], home: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": home, "GEOSCOUT_DATA_ROOT": str(cwd / "data")}
    env.pop("GEOSCOUT_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_missing_dagster_home_is_created_with_the_project_instance_settings(tmp_path):
    home = tmp_path / "new" / "dagster_home"
    done = _geoscout(["cells", "list"], str(home), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (home / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()


def test_unusable_dagster_home_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = _geoscout(["cells", "list"], str(blocker / "home"), tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "DAGSTER_HOME" in done.stderr and len(done.stderr.strip().splitlines()) <= 2
