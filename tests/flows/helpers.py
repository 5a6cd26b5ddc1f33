"""Tiny, hand-checkable run folders for stage tests: EMT metals (Cu/Al/Ni/Pd/Ag/Au/Pt) only.

`make_run` writes what the fetch and generate stages would have written (same schemas), so the
relax/score stages can be tested in seconds without training a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure

from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import CORE_COLUMNS, describe, records_to_frame, structure_to_json, write_structures

FCC = {"Cu": 3.61, "Al": 4.05, "Ni": 3.52, "Pd": 3.89, "Ag": 4.09, "Au": 4.08, "Pt": 3.92}


def fcc_cell(species: list[str], a: float, rattle: float, seed: int) -> Structure:
    coords = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], float)
    rng = np.random.default_rng(seed)
    coords += rng.normal(0, rattle / a, coords.shape)
    return Structure(Lattice.cubic(a * (1 + rng.normal(0, 0.01))), species, coords)


def candidates(n: int, *, seed: int = 0, supercell: int = 1) -> list[Structure]:
    """Rattled fcc cells: pure metals and Cu/Au-Ag/Ni-Al style binaries."""
    recipes = [["Cu"] * 4, ["Cu", "Cu", "Cu", "Au"], ["Al", "Ni", "Ni", "Ni"], ["Ag", "Au", "Ag", "Au"],
               ["Pt", "Pt", "Pd", "Pd"], ["Ni"] * 4]
    out = []
    for i in range(n):
        species = recipes[i % len(recipes)]
        a = float(np.mean([FCC[s] for s in species]))
        structure = fcc_cell(species, a, 0.05, seed + i)
        if supercell > 1:
            structure.make_supercell(supercell)
        out.append(structure)
    return out


def write_generated(layout: RunLayout, structures: list[Structure], *, n_invalid: int = 1, per_part: int = 4,
                    prefix: str = "gen") -> list[str]:
    """Generate-stage parts: valid rows plus `n_invalid` failed decodes (structure None, a reason)."""
    rows = []
    for i, s in enumerate(structures):
        rows.append({"id": f"{prefix}-{i:05d}", **describe(s), "structure": structure_to_json(s), "split": "",
                     "source": "test", "valid": True, "reason": "", "target_formula": None, "batch": i // per_part})
    for j in range(n_invalid):
        rows.append({"id": f"{prefix}-bad-{j}", "formula": None, "reduced_formula": None, "chemsys": None,
                     "n_sites": 0, "n_elements": 0, "structure": None, "split": "", "source": "test",
                     "valid": False, "reason": "no atoms decoded", "target_formula": None, "batch": 0})
    frame = pd.DataFrame(rows, columns=[*CORE_COLUMNS, "valid", "reason", "target_formula", "batch"])
    frame = frame.astype({"n_sites": "int32", "n_elements": "int32", "batch": "int32", "valid": bool})
    layout.generated.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, len(frame), per_part)):
        frame.iloc[start:start + per_part].to_parquet(layout.generated / f"part-{part:05d}.parquet", index=False)
    return [r["id"] for r in rows if r["valid"]]


def write_fetched(layout: RunLayout, n: int = 6, *, seed: int = 100) -> Path:
    """A fetched table ("train" split) of rattled EMT metals and binaries."""
    structures = candidates(n, seed=seed)
    frame = records_to_frame(structures, [f"train-{i}" for i in range(n)], split="train", source="test")
    return write_structures(frame, layout.structures)


def make_run(root: Path, campaign: str, n_candidates: int = 6, **kwargs) -> RunLayout:
    layout = RunLayout(Path(root), campaign)
    write_fetched(layout)
    write_generated(layout, candidates(n_candidates, **kwargs), prefix=f"{campaign}-gen")
    return layout


def write_metal_source(folder: Path, n: int = 12) -> tuple[Path, Path]:
    """A CDVAE-format CSV of `n` rattled EMT metal cells and a hand-made EMT hull (every element at +3 eV/atom, so
    a converged candidate lies below it): the inputs of a campaign that runs in seconds with EMT."""
    folder.mkdir(parents=True, exist_ok=True)
    csv, hull = folder / "metals.csv", folder / "hull.csv"
    rows = [{"material_id": f"m{i}", "cif": s.to(fmt="cif"), "formula": s.formula} for i, s in enumerate(candidates(n, seed=7))]
    pd.DataFrame(rows).to_csv(csv)
    pd.DataFrame({"id": list(FCC), "composition": list(FCC), "energy_per_atom": 3.0, "source": "hand",
                  "energy_scale": "own:emt"}).to_csv(hull, index=False)
    return csv, hull


def metal_campaign_args(root: Path, csv: Path, hull: Path, *extra: str) -> list[str]:
    """`unimat campaign` options of the EMT metal campaign: a tiny model that samples sensible cells after 200 steps
    (~15 s), 12 candidates a round, EMT relaxations, the hand-made hull."""
    return ["campaign", "--campaign", "metals", "--results-root", str(root), "--source", str(csv), "--crop-grid",
            "--max-steps", "200", "--batch-size", "4", "--learning-rate", "1e-3", "--steps", "20", "--gen-batch-size",
            "8", "--calculator", "emt", "--relax-steps", "100", "--time-limit", "10", "--chunk-size", "4",
            "--reference", str(hull), "--round-samples", "12", "--round-targets", "Cu-Au,Ni3Al,Ag3Pd,Au2Cu2", *extra]
