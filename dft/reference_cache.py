"""Offline hull pieces relaxed once per chemical system and reused across campaigns.

A "system" is one element ("O": its elemental prototypes, `dft.elemental`) or one pair ("Co-O": its
binary prototype decorations, `dft.prototypes`). Layout:

    <root>/<calculator>-<key digest>/settings.json         the full key (what the digest hashes)
    <root>/<calculator>-<key digest>/systems/<system>.parquet   one relaxed row per prototype

The key holds everything that changes an energy: the calculator's identity (name, model, energy
options, package version), the relaxation settings and the prototype set. Each row also stores the
hash of the exact structure it started from (`input_sha`), so a system file is reused only when it
holds exactly the structures the current code would relax: a changed prototype or radius table
recomputes the system instead of returning a stale entry. Files are written atomically.

Every relaxation goes through `dft.engine.relax_structures` (batched for ML potentials).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition, Structure

from dft.calculators import BuiltCalculator, CalculatorConfig, build_once, calculator_identity
from dft.elemental import elemental_prototypes
from dft.prototypes import DEFAULT_PROTOTYPES, binary_decorations, element_pairs
from dft.engine import relax_structures
from dft.relax import RelaxConfig, RelaxResult
from unimat_core.structure_table import records_to_frame
from unimat_core import atomic

CACHE_FORMAT = 2  # 2: collapsed cells (dft.batched.MIN_VOLUME_PER_ATOM 3 A^3) stop as blow-up rows
SOURCE = "reference-prototypes"


class StaleCache(RuntimeError):
    """A cache folder whose settings.json disagrees with the key it is filed under."""


@dataclass(frozen=True)
class PrototypeJob:
    """One structure to relax for the reference: its id, prototype name and whether its cell relaxes."""

    id: str
    system: str
    prototype: str
    structure: Structure
    relax_cell: bool = True

    @property
    def input_sha(self) -> str:
        text = json.dumps({"structure": self.structure.as_dict(), "relax_cell": self.relax_cell}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def canonical_system(system: str) -> str:
    """Elements sorted and joined by '-' ("O-Co" -> "Co-O")."""
    return "-".join(sorted(system.split("-")))


def system_jobs(system: str, prototypes: Sequence[str] = DEFAULT_PROTOTYPES) -> list[PrototypeJob]:
    """The structures an element (elemental prototypes) or a pair (binary decorations) is relaxed in."""
    elements = canonical_system(system).split("-")
    if len(elements) == 1:
        symbol = elements[0]
        return [PrototypeJob(f"elemental:{symbol}:{name}", symbol, name, structure, relax_cell=name != "dimer")
                for name, structure in elemental_prototypes(symbol).items()]
    if len(elements) == 2:
        pair = "-".join(elements)
        return [PrototypeJob(f"prototype:{pair}:{name}", pair, name, structure)
                for name, structure in binary_decorations(*elements, names=tuple(prototypes)).items()]
    raise ValueError(f"reference systems are single elements or pairs, not {system!r}")


def hull_systems(formulas: Iterable[str]) -> list[str]:
    """The systems an offline hull needs for these compositions: every element, then every pair of elements
    inside one composition's chemical system (a ternary can decompose into any of its three binaries)."""
    chemsys = sorted({Composition(f).chemical_system for f in formulas if f})
    elements = sorted({el for system in chemsys for el in system.split("-")})
    return elements + ["-".join(pair) for pair in element_pairs(chemsys)]


def relax_jobs(jobs: Sequence[PrototypeJob], calculator: CalculatorConfig | BuiltCalculator,
               config: RelaxConfig) -> list[RelaxResult]:
    """Relax reference prototypes with the candidates' calculator and settings, through the one relaxation
    engine (batched for ML potentials); molecules (dimers) keep their box, so they go in a fixed-cell call."""
    results: list[RelaxResult | None] = [None] * len(jobs)
    built = build_once(calculator)
    for relax_cell in (True, False):
        picked = [i for i, job in enumerate(jobs) if job.relax_cell == relax_cell]
        if not picked:
            continue
        settings = config.model_copy(update={"relax_cell": config.relax_cell and relax_cell})
        for i, result in zip(picked, relax_structures([jobs[i].structure for i in picked], built, settings)):
            results[i] = result
    return results  # type: ignore[return-value]


def jobs_frame(jobs: Sequence[PrototypeJob], results: Sequence[RelaxResult]) -> pd.DataFrame:
    """Relaxed rows in the relaxed-table layout (dft.batch) plus system, prototype and input_sha."""
    properties = {k: [r.properties()[k] for r in results] for k in RelaxResult.__dataclass_fields__ if k != "structure"}
    properties.update(system=[j.system for j in jobs], prototype=[j.prototype for j in jobs],
                      input_sha=[j.input_sha for j in jobs])
    return records_to_frame([r.structure for r in results], [j.id for j in jobs], source=SOURCE, properties=properties)


@dataclass(frozen=True)
class ReferenceCache:
    """Relaxed prototypes of one calculator + relaxation settings, one file per chemical system."""

    root: Path
    calculator: CalculatorConfig
    relax: RelaxConfig
    prototypes: tuple[str, ...] = DEFAULT_PROTOTYPES

    @cached_property
    def key(self) -> dict:
        return {"format": CACHE_FORMAT, "calculator": calculator_identity(self.calculator),
                "relax": self.relax.model_dump(), "prototypes": list(self.prototypes)}

    @cached_property
    def folder(self) -> Path:
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        slug = "-".join(str(v) for v in (self.calculator.name, self.key["calculator"]["model"]) if v)
        return Path(self.root) / f"{slug}-{digest}"

    def path(self, system: str) -> Path:
        return self.folder / "systems" / f"{canonical_system(system)}.parquet"

    def _check_settings(self) -> None:
        settings = self.folder / "settings.json"
        if settings.exists():
            if json.loads(settings.read_text()) != json.loads(json.dumps(self.key)):
                raise StaleCache(f"{settings} does not match the settings its folder name hashes; "
                                 f"delete {self.folder} to rebuild it")
            return
        atomic.write_text(settings, json.dumps(self.key, indent=1, sort_keys=True))

    def fresh(self, system: str) -> bool:
        """The system's file exists and holds exactly the structures the current code would relax."""
        path = self.path(system)
        if not path.exists():
            return False
        stored = pd.read_parquet(path, columns=["id", "input_sha"])
        wanted = {(j.id, j.input_sha) for j in system_jobs(system, self.prototypes)}
        return set(zip(stored["id"], stored["input_sha"])) == wanted

    def ensure(self, systems: Iterable[str], calculator: CalculatorConfig | BuiltCalculator | None = None) -> dict:
        """Relax every system that has no fresh file; returns counts and relaxation seconds."""
        self._check_settings()
        calculator = calculator or self.calculator
        wanted = sorted({canonical_system(s) for s in systems})
        done, relaxed, seconds = [], 0, 0.0
        for system in wanted:
            if self.fresh(system):
                done.append(system)
                continue
            jobs = system_jobs(system, self.prototypes)
            start = time.perf_counter()
            frame = jobs_frame(jobs, relax_jobs(jobs, calculator, self.relax))
            seconds += time.perf_counter() - start
            relaxed += len(jobs)
            with atomic.atomic_path(self.path(system)) as tmp:
                frame.to_parquet(tmp, index=False)
        return {"n_systems": len(wanted), "n_reused": len(done), "n_relaxed": relaxed, "seconds": seconds}

    def read(self, systems: Iterable[str]) -> pd.DataFrame:
        """Every relaxed row of `systems` (all outcomes); a system without a fresh file is an error."""
        systems = sorted({canonical_system(s) for s in systems})
        stale = [s for s in systems if not self.fresh(s)]
        if stale:
            raise StaleCache(f"no fresh cached relaxations for {stale} in {self.folder}: run ensure() first")
        frames = [pd.read_parquet(self.path(s)) for s in systems]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
