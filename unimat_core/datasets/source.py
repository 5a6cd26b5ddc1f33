"""Typed description of where a campaign's crystals come from, and the one call that loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unimat_core.datasets.bundled import BUNDLED_DATASETS, bundled_csv_paths, load_bundled
from unimat_core.datasets.cdvae_csv import LoadResult, check_cdvae_csv, read_cdvae_csv
from unimat_core.datasets.materials_project import MP20Query, fetch_materials_project
from unimat_core.provenance import file_hash


class DatasetSource(BaseModel):
    """`kind="bundled"` (perov_5 / carbon_24), `"csv"` (CDVAE-format CSV paths) or `"materials_project"`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["bundled", "csv", "materials_project"] = "bundled"
    name: str = "perov_5"
    splits: tuple[str, ...] = ()
    csv_paths: tuple[str, ...] = ()
    mp_chemsys: tuple[str, ...] = ()
    workers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DatasetSource:
        if self.kind == "bundled" and self.name not in BUNDLED_DATASETS:
            raise ValueError(f"unknown bundled dataset {self.name!r}; bundled: {sorted(BUNDLED_DATASETS)}")
        if self.kind == "bundled" and (missing := [s for s in self.splits if s not in BUNDLED_DATASETS[self.name]]):
            raise ValueError(f"{self.name} has no bundled split(s) {missing}; bundled: {list(BUNDLED_DATASETS[self.name])}")
        if self.kind == "csv":
            if not self.csv_paths:
                raise ValueError("a csv source needs at least one path in csv_paths")
            for path in self.csv_paths:
                check_cdvae_csv(path)
        return self

    def settings(self) -> dict:
        """What decides the fetched table (for its provenance record): not `workers`; CSV paths resolved."""
        return {"kind": self.kind, "name": self.name, "splits": list(self.splits), "mp_chemsys": list(self.mp_chemsys),
                "csv_paths": [str(Path(p).resolve()) for p in self.csv_paths]}

    def input_hashes(self) -> dict[str, str]:
        """Content hashes of the files this source reads (none for the Materials Project, queried live)."""
        if self.kind == "csv":
            files = {str(Path(p).resolve()): Path(p) for p in self.csv_paths}
        elif self.kind == "bundled":
            paths = bundled_csv_paths(self.name)
            files = {f"{self.name}/{split}": paths[split] for split in (self.splits or tuple(paths)) if split in paths}
        else:
            files = {}
        return {name: file_hash(path) for name, path in files.items()}

    @classmethod
    def parse(cls, text: str, *, splits: tuple[str, ...] = ()) -> DatasetSource:
        """CLI shorthand: "perov_5", "carbon_24", "mp" / "materials_project", or a CSV path."""
        if text in BUNDLED_DATASETS:
            return cls(kind="bundled", name=text, splits=splits)
        if text in ("mp", "materials_project", "mp_20"):
            return cls(kind="materials_project", name="mp_20", splits=splits)
        return cls(kind="csv", name=Path(text).name.split(".")[0], csv_paths=(text,), splits=splits)


def load_source(source: DatasetSource) -> LoadResult:
    """Load a source into a structure table (+ rejected rows). Split filtering happens here."""
    if source.kind == "bundled":
        result = load_bundled(source.name, source.splits or None, workers=source.workers)
    elif source.kind == "csv":
        result = LoadResult.concat([read_cdvae_csv(p, workers=source.workers) for p in source.csv_paths])
    else:
        result = fetch_materials_project(MP20Query(chemsys=source.mp_chemsys))
    if source.splits and source.kind != "bundled":
        keep = result.structures["split"].isin(source.splits)
        result = LoadResult(result.structures[keep].reset_index(drop=True), result.rejected)
    return result
