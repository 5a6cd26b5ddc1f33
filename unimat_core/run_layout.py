"""Deterministic run folders: `<root>/<campaign>/<stage>/...`, never timestamped, so reruns resume."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STAGES = ("fetch", "tensorize", "train", "generate", "relax", "score", "evaluate")
# which stages' outputs each stage reads: a change in one reaches every stage below it
UPSTREAM: dict[str, tuple[str, ...]] = {"fetch": (), "tensorize": ("fetch",), "train": ("tensorize",),
                                        "generate": ("train",), "relax": ("generate",), "score": ("relax", "fetch"),
                                        "evaluate": ("generate", "fetch")}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def dependents(stage: str) -> list[str]:
    """Every stage made (directly or not) from `stage`'s output, in pipeline order."""
    below = {stage}
    for later in STAGES[STAGES.index(stage) + 1:]:
        if below & set(UPSTREAM[later]):
            below.add(later)
    return [s for s in STAGES if s in below and s != stage]


class MissingStageOutput(FileNotFoundError):
    """A stage was asked to run before the stage that makes its input."""


@dataclass(frozen=True)
class RunLayout:
    root: Path
    campaign: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.campaign):
            raise ValueError(f"campaign name {self.campaign!r} must be letters, digits, '.', '_' or '-'")
        object.__setattr__(self, "root", Path(self.root))

    @property
    def campaign_dir(self) -> Path:
        return self.root / self.campaign

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
        return self.campaign_dir / stage

    @property
    def structures(self) -> Path:
        return self.stage_dir("fetch") / "structures.parquet"

    @property
    def fetch_rejected(self) -> Path:
        return self.stage_dir("fetch") / "rejected.parquet"

    @property
    def tensors(self) -> Path:
        return self.stage_dir("tensorize") / "dataset"

    @property
    def train_checkpoint(self) -> Path:
        return self.stage_dir("train") / "checkpoints" / "last.pt"

    @property
    def train_metrics(self) -> Path:
        return self.stage_dir("train") / "metrics.csv"

    @property
    def generated(self) -> Path:
        """Folder of `part-*.parquet` written by the generate stage (invalid decodes included)."""
        return self.stage_dir("generate")

    @property
    def relaxed(self) -> Path:
        """Folder of `part-*.parquet` written by the relax stage."""
        return self.stage_dir("relax")

    @property
    def reference(self) -> Path:
        return self.stage_dir("score") / "reference.parquet"

    @property
    def scores(self) -> Path:
        return self.stage_dir("score") / "scores.parquet"

    @property
    def per_structure_metrics(self) -> Path:
        """Evaluate stage's per-structure table (valid, unique, novel, reason)."""
        return self.stage_dir("evaluate") / "per_structure.parquet"

    def require(self, path: Path, made_by: str) -> Path:
        """Fail fast, naming the missing file and the stage that makes it."""
        if not path.exists():
            raise MissingStageOutput(f"{path} does not exist: run the `{made_by}` stage for campaign {self.campaign!r} first")
        return path

    def require_parts(self, folder: Path, made_by: str) -> list[Path]:
        """The `part-*.parquet` files of a stage folder; fail fast when there are none."""
        parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        if not parts:
            raise MissingStageOutput(f"{folder}/part-*.parquet does not exist: run the `{made_by}` stage for campaign "
                                     f"{self.campaign!r} first")
        return parts
