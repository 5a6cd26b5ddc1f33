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


def _logic_lines(path: Path) -> int:
    """Lines of code: no blanks, comments, docstrings or imports."""
    import ast

    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant):
            docstrings.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    return sum(1 for n, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith(("#", "import ", "from ")) and n not in docstrings)




def test_tasks_are_thin_wrappers():
    """A task reads, calls one core function, writes and returns a summary: no module of tasks/ holds more
    than ~80 lines of logic (the logic lives in unimat_core/ and dft/, where it runs without Prefect)."""
    for path in sorted((ROOT / "tasks").glob("*.py")):
        assert _logic_lines(path) <= 85, f"{path.name}: {_logic_lines(path)} lines of logic"


def test_settings_are_declared_once_and_the_cli_is_derived_from_them():
    """Every stage option of `unimat` sets parameter fields named by its dest (no hand-written option table),
    and no option is declared twice: the campaign's defaults are the stage models' defaults unless its profile
    (flows/profiles.py) overrides them by name."""
    from flows.cli import _models, build_parser, settable_fields

    models = _models()
    parser = build_parser()
    for command, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if "." not in action.dest:
                continue
            for target in action.dest.split("|"):
                group, field = target.split(".")
                # a model's own field, or a sub-config field it exposes (declared in the sub-config only)
                assert field in settable_fields(models[group]), (command, action.option_strings, target)
    from dft.relax import RelaxConfig
    from flows.params import EvaluateParams, GenerateParams, RelaxParams, TensorizeParams, TrainParams
    from unimat_core.metrics import MetricsConfig
    from unimat_core.model.config import GenerateConfig, TrainConfig
    from unimat_core.tensor_store import TensorizeConfig

    # each stage's settings exist once, in the core config the stage's code takes directly
    assert issubclass(RelaxParams, RelaxConfig)
    assert issubclass(TrainParams, TrainConfig) and issubclass(GenerateParams, GenerateConfig)
    pairs = ((TrainParams, TrainConfig), (GenerateParams, GenerateConfig), (RelaxParams, RelaxConfig),
             (TensorizeParams, TensorizeConfig), (EvaluateParams, MetricsConfig))
    assert all(issubclass(params, config) for params, config in pairs)
    for params, config in pairs:
        redeclared = [name for name in config.model_fields if params.__annotations__.get(name)]
        assert not redeclared, f"{params.__name__} declares {redeclared} again"


def test_atomic_writes_go_through_one_helper():
    """Temp-file-then-rename is written once (unimat_core/atomic.py): no module names a temporary file or renames
    one over its target itself."""
    patterns = (".tmp\")", ".tmp\"", "os.replace(", "os.rename(", "tmp.replace(", "tmp.rename(")
    for folder in ("dft", "tasks", "flows", "unimat_core", "deployments"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() == "unimat_core/atomic.py":
                continue
            text = path.read_text()
            found = [p for p in patterns if p in text]
            assert not found, f"{path.relative_to(ROOT)}: {found} (use unimat_core.atomic)"


def test_paths_of_a_run_come_from_run_layout():
    """RunLayout owns every path of a run folder: no module of tasks/, flows/ or deployments/ names one of the
    files it places (it asks the layout, or the core function that owns a folder's inside)."""
    import ast

    from unimat_core.run_layout import RunLayout, _In

    files = {part for attribute in vars(RunLayout).values() if isinstance(attribute, _In)
             for part in attribute.parts if "." in part}
    assert {"structures.parquet", "last.pt", "scores.parquet"} <= files  # the walk found the layout's files
    for folder in ("tasks", "flows", "deployments"):
        for path in (ROOT / folder).rglob("*.py"):
            named = sorted({node.value for node in ast.walk(ast.parse(path.read_text()))
                            if isinstance(node, ast.Constant) and node.value in files})
            assert not named, f"{path.relative_to(ROOT)} builds a run path by hand: {named} (use RunLayout)"
