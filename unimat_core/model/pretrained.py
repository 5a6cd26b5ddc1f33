"""Checkpoints shipped inside the package, loaded by name: `pretrained:perov_5`, `pretrained:carbon_24`.

Each lives in `unimat_core/pretrained/<name>/` as `last.pt` (a complete training checkpoint, so training
resumes from it) beside `MODEL_CARD.md` (data, command, steps, crystals seen, CPU-hours, metrics) and the
training log `metrics.csv`. Nothing is downloaded: a missing file is a broken install, said so.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "pretrained:"
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
CHECKPOINT_FILE = "last.pt"


class PretrainedError(ValueError):
    """An unknown pretrained name, or a shipped checkpoint missing from the installed package."""


def available() -> list[str]:
    """Names of the shipped models (folders with a model card)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "MODEL_CARD.md").exists())


def is_pretrained(reference: str | Path) -> bool:
    return isinstance(reference, str) and reference.startswith(PREFIX)


def resolve(reference: str | Path) -> Path:
    """The checkpoint file behind `pretrained:<name>`; any other reference is returned as a path."""
    if not is_pretrained(reference):
        return Path(reference)
    name = str(reference)[len(PREFIX):]
    names = available()
    if name not in names:
        raise PretrainedError(f"unknown pretrained model {name!r}; shipped: {', '.join(PREFIX + n for n in names) or 'none'}")
    path = PRETRAINED_DIR / name / CHECKPOINT_FILE
    if not path.exists():
        raise PretrainedError(f"{reference}: {path} is missing from the installed package (reinstall unimat-discovery)")
    return path


def checkpoint_file(reference: str | Path) -> Path:
    """The file a checkpoint reference names: a checkpoint file, a training folder's `last.pt`, or a shipped
    model's (`pretrained:perov_5`). Here, not beside the loader, so that settings can name it without torch."""
    path = resolve(reference)
    return path / CHECKPOINT_FILE if path.is_dir() else path
