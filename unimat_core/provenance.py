"""What made each stage's output, and what a rerun does about it.

Every stage folder holds `_provenance.json`: the stage's own settings (only those that change its
results) and a fingerprint of each input (a file's content hash, or the fingerprint of the upstream
stage's record). The leading underscore keeps it out of `pandas.read_parquet(stage_folder)`.

A rerun compares what it is asked to do with the record (`reconcile`):

- same settings and inputs: resume (finished parts are kept);
- other inputs (an upstream stage changed, an input file was edited): the stage and every stage made
  from it are set aside under `<campaign>/superseded/<time>-<stage>/` and recomputed;
- other settings on the same inputs: stop with `StageChanged`, which names what changed and what to do,
  unless the user asked to overwrite the stage (which redoes it in any case), or the stage rebuilds its
  output whole on every run anyway (`REBUILT_EACH_RUN`);
- outputs without a record (made before records existed): stop as for changed settings.

The record's `about` also names the software that made the output (`software_versions`): a resume under other
versions of it (a new CHGNet or torch can move energies and samples) goes on, as the settings are the same, but
says, on every rerun until the stage is redone, which versions changed and how to redo it with the new ones.

Nothing is deleted: superseded outputs keep their files and a `reason.txt`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unimat_core.errors import UserInputError
from unimat_core.run_layout import RunLayout, dependents
from unimat_core import atomic

RECORD_NAME = "_provenance.json"
SUPERSEDED = "superseded"
UNRECORDED = "unrecorded"  # fingerprint of an upstream output that has no record
# Stages whose outputs are rebuilt whole on every run: new settings rebuild them instead of stopping.
REBUILT_EACH_RUN = frozenset({"score", "evaluate"})
# The distributions whose version can change a stage's numbers: this package, the model and structure code, the
# calculators (those not installed are left out of a record).
SOFTWARE = ("unimat-discovery", "torch", "numpy", "pymatgen", "ase", "chgnet", "sevenn", "gpaw")


class StageChanged(UserInputError):
    """A stage's existing output was made with other settings than this run asks for."""


def fingerprint(data: object) -> str:
    """Short content hash of JSON-able data (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """Short content hash of a file, read in blocks (checkpoints may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def checkpoint_identity(path: str | Path, ignore: Iterable[str] = ("optimizer", "train_config")
                        ) -> tuple[str, int | None]:
    """(content hash, step) of a torch checkpoint, leaving out the top-level keys `ignore`: by default the
    optimizer state and the training config, which hold no part of the model (the config holds the run
    folder's paths, which change when a campaign folder is moved or copied). Tensors and values are hashed,
    not the file: torch.save writes other bytes when it saves the very same state again (as a resumed
    training with nothing left to do does). Memory-mapped, so only the hashing reads the tensors."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = {k: v for k, v in state.items() if k not in set(ignore)} if isinstance(state, dict) else state
    digest = hashlib.sha256()

    def feed(value: object) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                feed(item)
        elif isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())

    feed(state)
    step = state.get("step") if isinstance(state, dict) else None
    return digest.hexdigest()[:16], int(step) if step is not None else None


def software_versions() -> dict[str, str]:
    """{distribution: version} of the installed SOFTWARE (and Python), for a record's `about`."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def software_changes(old: dict, new: dict) -> str:
    """'torch 2.12.0 -> 2.13.0, chgnet 0.3.0 -> (none)': the versions in `old` (a record's) that `new` differs in;
    '' when either names none (records from before versions were kept)."""
    if not old or not new:
        return ""
    names = [n for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    return ", ".join(f"{n} {old.get(n, '(none)')} -> {new.get(n, '(none)')}" for n in names)


def _plain(data: dict) -> dict:
    """The dict as it reads back from JSON (tuples -> lists), so a record compares equal to its file."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


@dataclass(frozen=True)
class StageRecord:
    """What made a stage's output. `about` is informative (e.g. the checkpoint's step), never compared."""

    stage: str
    settings: dict
    inputs: dict[str, str]
    about: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("settings", "inputs", "about"):
            object.__setattr__(self, name, _plain(getattr(self, name)))

    @property
    def fingerprint(self) -> str:
        return fingerprint({"stage": self.stage, "settings": self.settings, "inputs": self.inputs})

    def as_dict(self) -> dict:
        return {"stage": self.stage, "fingerprint": self.fingerprint, "settings": self.settings,
                "inputs": self.inputs, "about": self.about}

    @classmethod
    def from_dict(cls, data: dict) -> StageRecord:
        return cls(data["stage"], data["settings"], data["inputs"], data.get("about", {}))


def record_path(layout: RunLayout, stage: str) -> Path:
    return layout.stage_dir(stage) / RECORD_NAME


def read_record(layout: RunLayout, stage: str) -> StageRecord | None:
    path = record_path(layout, stage)
    return StageRecord.from_dict(json.loads(path.read_text())) if path.exists() else None


def write_record(layout: RunLayout, record: StageRecord) -> Path:
    """Write atomically: a killed run leaves the old record or the new one, never half of one."""
    return atomic.write_text(record_path(layout, record.stage), json.dumps(record.as_dict(), indent=1))


def update_about(layout: RunLayout, stage: str, **about: object) -> None:
    """Add informative fields (e.g. the step a training reached) to a stage's record."""
    record = read_record(layout, stage)
    if record is not None:
        write_record(layout, StageRecord(record.stage, record.settings, record.inputs, {**record.about, **about}))


def upstream_fingerprint(layout: RunLayout, stage: str) -> str:
    """How a downstream stage names this stage's output among its inputs."""
    record = read_record(layout, stage)
    return record.fingerprint if record is not None else UNRECORDED


def has_output(layout: RunLayout, stage: str) -> bool:
    folder = layout.stage_dir(stage)
    return folder.is_dir() and any(p.name != RECORD_NAME for p in folder.iterdir())


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value: object, width: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_changes(old: dict, new: dict, limit: int = 3) -> str:
    """'calculator "emt" -> "chgnet", fmax 0.05 -> 0.01' (the first `limit` differences)."""
    before, after = _flat(old), _flat(new)
    keys = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    parts = [f"{k} {_short(before.get(k))} -> {_short(after.get(k))}" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _stage_changed(layout: RunLayout, stage: str, old: StageRecord | None, settings: dict) -> StageChanged:
    what = (f"was made with other settings (made -> asked: {describe_changes(old.settings, settings)})"
            if old is not None else "has outputs with no record of what made them (an older unimat)")
    later = [s for s in dependents(stage) if layout.stage_dir(s).exists()]
    also = f" and the stages made from it ({', '.join(later)})" if later else ""
    return StageChanged(f"{stage} of campaign {layout.campaign!r} {what}. To redo it{also}: add --overwrite {stage} "
                        f"(the old output moves to {layout.campaign_dir / SUPERSEDED}/); to keep it: use another "
                        "--campaign.")


def check_settings(layout: RunLayout, stage: str, settings: dict, *, overwrite: bool = False) -> None:
    """Raise StageChanged if running `stage` with `settings` would meet output made with other settings.

    No side effects: the CLI calls it for every stage of a command before any work starts."""
    if overwrite or stage in REBUILT_EACH_RUN or not has_output(layout, stage):
        return
    old = read_record(layout, stage)
    if old is None or old.settings != _plain(settings):
        raise _stage_changed(layout, stage, old, settings)


def set_aside(layout: RunLayout, stages: Iterable[str], reason: str) -> Path | None:
    """Move the existing folders of `stages` to `<campaign>/superseded/<time>-<first stage>/` with a reason.txt."""
    moving = [s for s in stages if layout.stage_dir(s).exists()]
    if not moving:
        return None
    base = layout.campaign_dir / SUPERSEDED / f"{time.strftime('%Y%m%d-%H%M%S')}-{moving[0]}"
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}-{n}")
    target.mkdir(parents=True)
    for stage in moving:
        layout.stage_dir(stage).rename(target / stage)
    (target / "reason.txt").write_text(reason + "\n")
    return target


def reconcile(layout: RunLayout, wanted: StageRecord, *, overwrite: bool = False) -> str:
    """Make the stage folder hold only output made by `wanted` (see the module docstring), then record it.

    Returns what was done for the log ('' when the stage starts fresh or resumes); raises StageChanged
    when the settings changed and neither `overwrite` nor REBUILT_EACH_RUN allows redoing the stage."""
    stage = wanted.stage
    old = read_record(layout, stage)
    if not has_output(layout, stage):  # nothing made yet (or a run killed before its first output): start afresh
        write_record(layout, wanted)
        return ""
    same = old is not None and (old.settings, old.inputs) == (wanted.settings, wanted.inputs)
    if same and not overwrite:
        about = {**old.about, **wanted.about}
        if old.about.get("software"):  # the software that made the output first stays its record
            about["software"] = old.about["software"]
        write_record(layout, StageRecord(stage, wanted.settings, wanted.inputs, about))
        changed = software_changes(old.about.get("software", {}), wanted.about.get("software", {}))
        if not changed or stage in REBUILT_EACH_RUN:
            return ""
        return (f"{stage}: resuming output made with other software ({changed}); its finished parts are kept. To "
                f"redo it with this software: add --overwrite {stage}")
    if same:
        why = "asked to redo it"
    elif old is None:
        why = "its outputs have no record of what made them"
    elif old.inputs != wanted.inputs:
        changed = [name for name in sorted(set(old.inputs) | set(wanted.inputs))
                   if old.inputs.get(name) != wanted.inputs.get(name)]
        known = {key: value for key, value in wanted.about.items() if key != "software"}  # e.g. the model's step
        before = {key: old.about.get(key) for key in known}
        about = f" ({describe_changes(before, known)})" if before != known else ""
        why = f"its input {', '.join(changed)} changed{about}"
    else:
        why = f"its settings changed: {describe_changes(old.settings, wanted.settings)}"
    inputs_changed = old is not None and old.inputs != wanted.inputs
    if not (inputs_changed or overwrite or stage in REBUILT_EACH_RUN):
        raise _stage_changed(layout, stage, old, wanted.settings)
    if overwrite and not inputs_changed and not same:
        why += " (--overwrite)"
    moved = set_aside(layout, [stage, *dependents(stage)], f"{stage}: {why}")
    write_record(layout, wanted)
    if moved is None:
        return f"{stage}: {why}: recomputing"
    stages = [s for s in (stage, *dependents(stage)) if (moved / s).exists()]
    return f"{stage}: {why}: recomputing; the previous output of {', '.join(stages)} is kept in {moved}"
