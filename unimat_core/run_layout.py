"""Deterministic run folders: `<root>/<campaign>/<stage>/...`, never timestamped, so reruns resume."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STAGES = ("fetch", "tensorize", "train", "generate", "relax", "score", "evaluate")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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

    def require(self, path: Path, made_by: str) -> Path:
        """Fail fast, naming the missing file and the stage that makes it."""
        if not path.exists():
            raise MissingStageOutput(f"{path} does not exist: run the `{made_by}` stage for campaign {self.campaign!r} first")
        return path
