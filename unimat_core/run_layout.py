"""Deterministic run folders: `<root>/<campaign>/<stage>/...`, never timestamped, so reruns resume.

A campaign run in rounds (`unimat campaign --round next|N`) keeps the stages every round shares (fetch,
tensorize, train) in the campaign folder and puts each round's own stages under
`<campaign>/round-NNNN/<stage>/` (with its `reports/`, the round's `plan.json` and its fine-tuned model);
`<campaign>/discoveries.parquet` collects the new crystals of every round. A layout without a round is the
single-run campaign of before.

`RunLayout` owns every path of a run: stages, tasks and flows ask it, never build one by hand. A folder that is
a parquet dataset (`generate/`, `relax/`: `pandas.read_parquet(folder)` reads it) holds only its part files;
plots and reports of a stage go to `<campaign>/reports/`, beside the datasets, not inside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import overload

STAGES = ("fetch", "tensorize", "train", "generate", "relax", "score", "evaluate")
# which stages' outputs each stage reads: a change in one reaches every stage below it
UPSTREAM: dict[str, tuple[str, ...]] = {"fetch": (), "tensorize": ("fetch",), "train": ("tensorize",),
                                        "generate": ("train",), "relax": ("generate",), "score": ("relax", "fetch"),
                                        "evaluate": ("generate", "fetch")}
# stages whose output belongs to one round of a campaign run in rounds (the others are shared by every round)
ROUND_STAGES = ("generate", "relax", "score", "evaluate")
FINETUNE = "finetune"  # a round's fine-tune of the model on earlier rounds' finds (not a pipeline stage)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def dependents(stage: str) -> list[str]:
    """Every stage made (directly or not) from `stage`'s output, in pipeline order."""
    if stage == FINETUNE:  # a round's fine-tuned model makes the round's samples and all made from them
        return ["generate", *dependents("generate")]
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


class _In:
    """A path of a run, read as a property of RunLayout: `parts` under `folder` ("campaign", "round", "reports" or a
    stage name, resolved by the layout at the time it is read), with its docstring."""

    def __init__(self, folder: str, *parts: str, doc: str = "") -> None:
        self.folder, self.parts, self.__doc__ = folder, parts, doc or f"{folder}/{'/'.join(parts)}"

    @overload
    def __get__(self, layout: None, owner: type | None = None) -> _In: ...
    @overload
    def __get__(self, layout: RunLayout, owner: type | None = None) -> Path: ...

    def __get__(self, layout: RunLayout | None, owner: type | None = None) -> Path | _In:
        if layout is None:
            return self
        base = {"campaign": lambda: layout.campaign_dir, "round": layout.round_dir,
                "reports": lambda: layout.reports}.get(self.folder, lambda: layout.stage_dir(self.folder))()
        return base.joinpath(*self.parts)


@dataclass(frozen=True)
class RunLayout:
    root: Path
    campaign: str
    round: int | None = None  # a round of a campaign run in rounds; None: the single-run layout

    def __post_init__(self) -> None:
        if not _NAME.match(self.campaign):
            raise ValueError(f"campaign name {self.campaign!r} must be letters, digits, '.', '_' or '-'")
        if self.round is not None and not 1 <= self.round <= 9999:
            raise ValueError(f"round {self.round} must be between 1 and 9999")
        object.__setattr__(self, "root", Path(self.root))

    @property
    def campaign_dir(self) -> Path:
        return self.root / self.campaign

    def for_round(self, number: int | None) -> RunLayout:
        """The same campaign's layout for round `number` (None: the campaign-level layout)."""
        return RunLayout(self.root, self.campaign, number)

    def round_dir(self, number: int | None = None) -> Path:
        """`<campaign>/round-NNNN/` of `number` (default: this layout's round)."""
        number = self.round if number is None else number
        if number is None:
            raise ValueError("this layout has no round")
        return self.campaign_dir / f"round-{number:04d}"

    @property
    def stage_home(self) -> Path:
        """Where this layout's per-round stages live: the round folder, or the campaign folder."""
        return self.round_dir() if self.round is not None else self.campaign_dir

    def stage_dir(self, stage: str) -> Path:
        if stage == FINETUNE:
            return self.round_dir() / FINETUNE
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
        return (self.stage_home if stage in ROUND_STAGES else self.campaign_dir) / stage

    @property
    def label(self) -> str:
        """`campaign` or `campaign round 2`, for logs and artifacts."""
        return self.campaign if self.round is None else f"{self.campaign} round {self.round}"

    round_plan = _In("round", "plan.json", doc="The round's targets and seeds (JSON), written once so a resumed "
                     "round asks for the same.")
    round_status = _In("round", "_round.json", doc="The round's state (JSON): running / done, when, and its summary.")
    finetune_checkpoint = _In(FINETUNE, "checkpoints", "last.pt")
    finetune_tensors = _In("round", "finetune-data", doc="The finds a round fine-tunes on, as a tensor dataset.")
    discoveries = _In("campaign", "discoveries.parquet", doc="Every round's new crystals (unique and novel), with the "
                      "round that found each.")
    round_stats = _In("campaign", "rounds.parquet", doc="One row per round: candidates, stable, new finds, median "
                      "energy above hull, S.U.N. rate.")
    discoveries_plot = _In("campaign", "reports", "discoveries.png")
    campaign_lock = _In("campaign", "_round.lock", doc="Held by the process running a round, so two rounds of one "
                        "campaign never run at once.")

    def rounds(self) -> list[int]:
        """The numbers of the campaign's existing round folders, ascending."""
        found = (re.fullmatch(r"round-(\d{4})", p.name) for p in self.campaign_dir.glob("round-*"))
        return sorted(int(m.group(1)) for m in found if m)

    structures = _In("fetch", "structures.parquet")
    fetch_rejected = _In("fetch", "rejected.parquet")
    fetch_source = _In("fetch", "source.json", doc="The source settings the fetch stage loaded (JSON), read by "
                       "evaluate to name the dataset.")
    tensors = _In("tensorize", "dataset")
    train_checkpoint = _In("train", "checkpoints", "last.pt")
    train_metrics = _In("train", "metrics.csv")
    train_config = _In("train", "config.json", doc="The TrainConfig of the first training run (JSON).")
    loss_plot = _In("train", "loss.png")
    generated = _In("generate", doc="Folder of `part-*.parquet` written by the generate stage (invalid decodes "
                    "included).")
    relaxed = _In("relax", doc="Folder of `part-*.parquet` written by the relax stage.")

    @property
    def reports(self) -> Path:
        """Plots and reports of stages whose folder is a parquet dataset (kept out of it)."""
        return self.stage_home / "reports"

    relax_steps_plot = _In("reports", "relax-steps.png")
    reference = _In("score", "reference.parquet")
    reference_info = _In("score", "reference.json", doc="Which energy scale the reference came on and the hull's "
                         "(JSON).")

    @property
    def reference_cache(self) -> Path:
        """Relaxed reference prototypes shared by every campaign under this root (campaign names cannot start
        with "_")."""
        return self.root / "_reference_cache"

    def reference_relax_dir(self, key: str) -> Path:
        """Where the score stage relaxes dataset crystals for the reference, one folder per calculator settings key."""
        return self.stage_dir("score") / "reference-relax" / key

    scores = _In("score", "scores.parquet")
    sun_summary = _In("score", "sun.json")
    decomposition_plot = _In("score", "decomposition_energy.png")

    @property
    def fingerprint_cache(self) -> Path:
        return fingerprint_cache(self.root)

    def csp_dir(self, k: int) -> Path:
        return self.stage_dir("evaluate") / f"csp-k{k}"

    discovery = _In("campaign", "discovery", doc="The discovery benchmark's folder (dft.discovery_benchmark "
                    "documents its layout).")
    per_structure_metrics = _In("evaluate", "per_structure.parquet", doc="Evaluate stage's per-structure table "
                                "(valid, unique, novel, reason).")

    def require(self, path: Path, made_by: str) -> Path:
        """Fail fast, naming the missing file and the stage that makes it."""
        if not path.exists():
            raise MissingStageOutput(f"{path} does not exist: run the `{made_by}` stage for campaign {self.label!r} first")
        return path

    def require_parts(self, folder: Path, made_by: str) -> list[Path]:
        """The `part-*.parquet` files of a stage folder; fail fast when there are none."""
        parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        if not parts:
            raise MissingStageOutput(f"{folder}/part-*.parquet does not exist: run the `{made_by}` stage for campaign "
                                     f"{self.label!r} first")
        return parts
