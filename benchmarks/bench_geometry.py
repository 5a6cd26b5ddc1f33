"""Diagnostics of a model's geometry, cheaper than the full metrics (benchmarks/RESULTS.md, "carbon_24: what the
model lacks"):

    python benchmarks/bench_geometry.py samplers --model pretrained:carbon_24 --settings dpm++2m:10:1,ddpm:100:1
    python benchmarks/bench_geometry.py noise-levels --model pretrained:carbon_24 --dataset carbon_24
    python benchmarks/bench_geometry.py fingerprints --dataset carbon_24 GENERATED_FOLDER ...

- samplers: structural validity (`unimat_core.metrics.validity`, CDVAE's rule) and the median minimum interatomic distance of
  composition-first samples per sampler setting (sampler:steps:guidance), same seed for every setting;
- noise-levels: per band of timesteps, the atom and lattice eps-MSE of the EMA weights on test crystals and the
  rms distance (fractional, nearest image) of the x0 estimate from the crystal: does the model refine positions
  at low noise, or only reproduce the noisy input?
- fingerprints: the distance of each generated crystal's CrystalNN fingerprint to the nearest of a seeded 300 test
  crystals (COV's cutoff is 0.2), with val crystals as the yardstick.
One thread; prints a small table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BANDS = ((0, 20), (20, 100), (100, 250), (250, 500), (500, 750), (750, 1000))


def _validity(texts) -> tuple[np.ndarray, np.ndarray]:
    """(structurally valid by the metrics' own CDVAE rule, shortest interatomic distance in A) of each sample;
    a sample that did not decode is invalid at distance 0."""
    from unimat_core.metrics.validity import structure_validity
    from unimat_core.structure_table import read_structure_text

    valid, shortest = [], []
    for text in texts:
        structure, _ = read_structure_text(text) if isinstance(text, str) else (None, None)
        valid.append(structure is not None and structure_validity(structure)[0])
        shortest.append(0.0 if structure is None or len(structure) < 2
                        else float((structure.distance_matrix + np.eye(len(structure)) * 1e3).min()))
    return np.array(valid), np.array(shortest)


def samplers(model: str, settings: list[str], samples: int) -> None:
    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.generation import GenerateConfig, generate, read_generated
    from unimat_core.model.pretrained import resolve

    path = resolve(model)
    loaded = load_model(path, "cpu")
    print(f"{model} (step {loaded.step}), {samples} composition-first samples\n")
    print("| sampler | steps | guidance | struct. valid | median min. distance (A) |\n|---|---|---|---|---|")
    for setting in settings:
        sampler, steps, guidance = setting.split(":")
        with tempfile.TemporaryDirectory() as out:
            generate(GenerateConfig(checkpoint=str(path), out_dir=out, num_samples=samples, batch_size=samples,
                                    sampler=sampler, steps=int(steps), guidance=float(guidance), device="cpu",
                                    cpu_threads=1), loaded=loaded)
            valid, shortest = _validity(read_generated(out)["structure"])
        print(f"| {sampler} | {steps} | {guidance} | {100 * valid.mean():.1f} % | {np.median(shortest):.2f} |", flush=True)


def noise_levels(model: str, dataset: str, crystals: int, split: str = "test") -> None:
    """Per-noise-level error on `split`; the training split (val) beside test tells under- from over-fitting."""
    import torch

    from unimat_core.datasets import load_bundled
    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.pretrained import resolve
    from unimat_core.representation import composition_grid, encode
    from unimat_core.structure_table import structures_of

    loaded = load_model(resolve(model), "cpu")
    tables = load_bundled(dataset).structures
    test = tables[tables["split"] == split].sample(crystals, random_state=0)
    batch = encode(structures_of(test), loaded.spec, on_error="ignore")  # in the cells the model was trained on
    coords, lattice = torch.from_numpy(batch.coords), torch.from_numpy(batch.lattice)
    grid = torch.from_numpy(composition_grid(batch.coords, loaded.spec) / loaded.spec.max_atoms_per_element).float()
    flag = torch.ones(len(coords))
    diffusion, generator = loaded.diffusion, torch.Generator().manual_seed(0)
    atoms = (coords.mean(-1) > loaded.spec.null_value / 2).float()
    print(f"{model} (step {loaded.step}) on {len(coords)} {dataset} {split} crystals, {'Niggli-reduced' if loaded.spec.niggli else 'as stored'}\n")
    print("| timesteps | atom eps-MSE | lattice eps-MSE | x0 rms error (fractional) |\n|---|---|---|---|")
    for low, high in BANDS:
        t = torch.randint(low, high, (len(coords),), generator=generator)
        noise_c = torch.randn(coords.shape, generator=generator)
        noise_l = torch.randn(lattice.shape, generator=generator)
        with torch.no_grad():
            noisy = diffusion.q_sample(coords, t, noise_c)
            pred_c, pred_l = loaded.model(noisy, diffusion.q_sample(lattice, t, noise_l), t, grid, flag)
        x0 = diffusion._x0_from(noisy, pred_c, t)
        error = x0 - coords
        error = error - error.round()
        eps = ((pred_c - noise_c).pow(2).mean(-1) * atoms).sum() / atoms.sum()
        rms = ((error.pow(2).mean(-1) * atoms).sum() / atoms.sum()).sqrt()
        print(f"| {low}-{high} | {eps:.3f} | {(pred_l - noise_l).pow(2).mean():.3f} | {rms:.4f} |", flush=True)


def fingerprints(dataset: str, folders: list[str]) -> None:
    from scipy.spatial.distance import cdist

    from unimat_core.datasets import load_bundled
    from unimat_core.metrics.analysis import fingerprint_structures
    from unimat_core.model.generation import read_generated

    tables = load_bundled(dataset).structures
    reference, _, _ = fingerprint_structures(tables[tables["split"] == "test"].sample(300, random_state=0)["structure"].tolist(), 1)
    reference = reference[np.isfinite(reference).all(1)]

    def row(name: str, texts: list) -> None:
        found, _, _ = fingerprint_structures(texts, 1)
        nearest = cdist(found[np.isfinite(found).all(1)], reference).min(1)
        q10, q50, q90 = np.quantile(nearest, [0.1, 0.5, 0.9])
        print(f"| {name} | {len(nearest)} | {q10:.3f} | {q50:.3f} | {q90:.3f} | {int((nearest <= 0.2).sum())} |", flush=True)

    print("| crystals | n | nearest, 10 % | median | 90 % | within 0.2 |\n|---|---|---|---|---|---|")
    row("val split (yardstick)", tables[tables["split"] == "val"].sample(100, random_state=1)["structure"].tolist())
    for folder in folders:
        row(folder, [t for t in read_generated(folder)["structure"] if isinstance(t, str)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("samplers")
    s.add_argument("--model", default="pretrained:carbon_24")
    s.add_argument("--settings", default="dpm++2m:10:1,ddim:50:1,ddpm:100:1,ddpm:200:2")
    s.add_argument("--samples", type=int, default=200)
    n = sub.add_parser("noise-levels")
    n.add_argument("--model", default="pretrained:carbon_24")
    n.add_argument("--dataset", default="carbon_24")
    n.add_argument("--crystals", type=int, default=512)
    n.add_argument("--split", default="test", help="test, or val (the training split) to tell under- from over-fitting")
    f = sub.add_parser("fingerprints")
    f.add_argument("--dataset", default="carbon_24")
    f.add_argument("folders", nargs="*", help="generation folders (part-*.parquet)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    if args.command == "samplers":
        samplers(args.model, args.settings.split(","), args.samples)
    elif args.command == "noise-levels":
        noise_levels(args.model, args.dataset, args.crystals, args.split)
    else:
        fingerprints(args.dataset, args.folders)


if __name__ == "__main__":
    main()
