"""Helpers for Prefect UI artifacts: valid keys, small plots (saved as files and inlined), file links.

Plots are PNG files written into the stage folder (so they outlive the Prefect database) and
embedded in markdown artifacts as base64 data URIs (the UI renders them inline).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())
    return re.sub(r"-{2,}", "-", key).strip("-") or "unimat"


def _figure(width: float = 5.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display; safe in worker threads
    from matplotlib.figure import Figure  # the object API: no global pyplot state shared across threads

    return Figure(figsize=(width, height), dpi=90)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def histogram_png(values: Sequence[float], path: str | Path, *, title: str, xlabel: str,
                  markers: dict[str, float] | None = None) -> Path | None:
    """Histogram of the finite values (None when there are none); vertical lines at `markers`."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(finite, bins=min(40, max(5, len(finite) // 3)), color="#4c72b0")
    for label, x in (markers or {}).items():
        ax.axvline(x, color="#c44e52", linestyle="--", linewidth=1, label=label)
    if markers:
        ax.legend(fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel="count")
    return _save(fig, Path(path))


def loss_curve_png(metrics_csv: str | Path, path: str | Path) -> Path | None:
    """Training loss against step from the train stage's metrics.csv (None when it has no rows)."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.exists():
        return None
    frame = pd.read_csv(metrics_csv)
    if frame.empty:
        return None
    frame = frame.drop_duplicates("step", keep="last").sort_values("step")  # a resumed run may repeat steps
    fig = _figure()
    ax = fig.add_subplot()
    for column in ("loss", "loss_atoms", "loss_lattice"):
        if column in frame:
            ax.plot(frame["step"], frame[column], label=column, linewidth=1.2 if column == "loss" else 0.8)
    ax.set_yscale("log")
    ax.set(title="training loss", xlabel="step", ylabel="loss")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def rounds_png(rounds: pd.DataFrame, path: str | Path) -> Path | None:
    """Cumulative stable and S.U.N. finds per round (rounds.parquet's columns); None without rows."""
    if rounds.empty:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for column, label in (("cumulative_stable", "stable (converged, on or below the hull)"),
                          ("cumulative_new", "new (unique, novel)"), ("cumulative_sun", "S.U.N.")):
        ax.plot(rounds["round"], rounds[column], marker="o", label=label)
    ax.set(title="cumulative finds per round", xlabel="round", ylabel="crystals")
    ax.set_xticks(list(rounds["round"]))
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def inline_image(path: Path | None, alt: str) -> str:
    """Markdown for a PNG embedded as a data URI ('' when there is no image)."""
    if path is None:
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})\n\n"


def file_links(paths: dict[str, str | Path]) -> str:
    """A markdown list of output files (absolute paths; the UI shows them, a shell opens them)."""
    return "".join(f"* {label}: `{Path(p).resolve()}`\n" for label, p in paths.items() if p and Path(p).exists())


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return str(value).replace("|", "/")


def markdown_table(frame: pd.DataFrame) -> str:
    """A plain markdown table (floats to 3 decimals) without extra dependencies."""
    if frame.empty:
        return "_(none)_\n"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def table_records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe rows for a table artifact (NaN -> None)."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def reference_checks_markdown(checks: dict) -> str:
    """The score stage's reference sanity checks (dft.scoring.sanity_checks) as markdown; empty without any."""
    if not checks:
        return ""
    return ("\n#### Reference sanity (hull on MP's scale)\n\nElements vs MP's elemental references (eV/atom):\n\n"
            + markdown_table(checks["elements"]) + "\nTextbook binaries in the hull (formation energy, eV/atom):\n\n"
            + markdown_table(checks["textbook"]))
