"""The layering rule: `unimat_core/` and `dft/` are plain Python and never import Prefect; `flows/` compose
tasks and hold no science. Checked by importing every core module in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib, pkgutil, sys
import dft, unimat_core
names = [m.name for pkg in (unimat_core, dft) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))
print(len(names), leaked[:5])
assert not leaked, leaked
"""


def test_core_and_dft_modules_never_import_prefect():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_modules = int(proc.stdout.split()[0])
    assert n_modules > 30  # every module was imported, not an empty walk


def test_flows_and_tasks_only_import_from_the_layers_below():
    """tasks/ may use unimat_core/ and dft/; flows/ use tasks/ (and typed params) but never the reverse."""
    for path in (ROOT / "unimat_core").rglob("*.py"):
        text = path.read_text()
        assert "from tasks" not in text and "from flows" not in text, path
    for path in (ROOT / "dft").rglob("*.py"):
        text = path.read_text()
        assert "from tasks" not in text and "from flows" not in text, path
    for path in (ROOT / "tasks").rglob("*.py"):
        assert "from flows" not in path.read_text(), path
