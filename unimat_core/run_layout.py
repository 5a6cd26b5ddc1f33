"""Deterministic run folders: `<root>/<campaign>/<stage>/...`, never timestamped, so reruns resume.

`RunLayout` owns every path of a run: stages, tasks and flows ask it, never build one by hand. A folder that is
a parquet dataset (`generate/`, `relax/`: `pandas.read_parquet(folder)` reads it) holds only its part files;
plots and reports of a stage go to `<campaign>/reports/`, beside the datasets, not inside them.
"""

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


def fingerprint_cache(root: str | Path) -> Path:
    """Fingerprints shared by every campaign under a results root."""
    return Path(root) / ".cache" / "fingerprints"


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
    def fetch_source(self) -> Path:
        """The source settings the fetch stage loaded (JSON), read by evaluate to name the dataset."""
        return self.stage_dir("fetch") / "source.json"

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
    def train_config(self) -> Path:
        """The TrainConfig of the first training run (JSON)."""
        return self.stage_dir("train") / "config.json"

    @property
    def loss_plot(self) -> Path:
        return self.stage_dir("train") / "loss.png"

    @property
    def generated(self) -> Path:
        """Folder of `part-*.parquet` written by the generate stage (invalid decodes included)."""
        return self.stage_dir("generate")

    @property
    def relaxed(self) -> Path:
        """Folder of `part-*.parquet` written by the relax stage."""
        return self.stage_dir("relax")

    @property
    def reports(self) -> Path:
        """Plots and reports of stages whose folder is a parquet dataset (kept out of it)."""
        return self.campaign_dir / "reports"

    @property
    def relax_steps_plot(self) -> Path:
        return self.reports / "relax-steps.png"

    @property
    def reference(self) -> Path:
        return self.stage_dir("score") / "reference.parquet"

    @property
    def reference_info(self) -> Path:
        """Which energy scale the reference came on and the hull's (JSON)."""
        return self.stage_dir("score") / "reference.json"

    @property
    def reference_cache(self) -> Path:
        """Relaxed reference prototypes shared by every campaign under this root (campaign names cannot start
        with "_")."""
        return self.root / "_reference_cache"

    def reference_relax_dir(self, key: str) -> Path:
        """Where the score stage relaxes dataset crystals for the reference, one folder per calculator settings key."""
        return self.stage_dir("score") / "reference-relax" / key

    @property
    def scores(self) -> Path:
        return self.stage_dir("score") / "scores.parquet"

    @property
    def sun_summary(self) -> Path:
        return self.stage_dir("score") / "sun.json"

    @property
    def decomposition_plot(self) -> Path:
        return self.stage_dir("score") / "decomposition_energy.png"

    @property
    def fingerprint_cache(self) -> Path:
        return fingerprint_cache(self.root)

    def csp_dir(self, k: int) -> Path:
        return self.stage_dir("evaluate") / f"csp-k{k}"

    @property
    def discovery(self) -> Path:
        """The discovery benchmark's folder (dft.discovery_benchmark documents its layout)."""
        return self.campaign_dir / "discovery"

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
