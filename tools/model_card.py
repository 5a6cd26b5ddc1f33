"""Write unimat_core/pretrained/<name>/MODEL_CARD.md from the shipped config, training log and learning curve.

    python tools/model_card.py perov_5 2026-11-30   (after tools/pretrain.sh and bench_learning_curve.py evaluate)
"""
import json, sys
from pathlib import Path
import pandas as pd

name, date = sys.argv[1], sys.argv[2]
ship = Path("unimat_core/pretrained") / name
config = json.loads((ship / "config.json").read_text())
log = pd.read_csv(ship / "metrics.csv")
offset, prev, total = 0.0, 0.0, 0.0
for e in log["elapsed_s"]:
    if e < prev:
        offset += prev
    prev = e
seconds = offset + prev
steps = int(log["step"].iloc[-1])
curve = pd.read_csv(f"benchmarks/runs/{name}/curve-pretrained/curve.csv")
last = curve.iloc[-1]
rows = "\n".join(f"| {int(r.step):,} | {r.cpu_s/3600:.2f} | {100*r.csp_match:.0f} % | {r.csp_rmse:.3f} | "
                 f"{100*r.struct_validity:.1f} % | {100*r.comp_validity:.1f} % | {100*r.cov_recall:.1f} % | "
                 f"{100*r.cov_precision:.1f} % | {r.emd_density:.3f} |" for r in curve.itertuples())
d = config["diffusion"]
card = f"""# `pretrained:{name}`: UniMat `tiny` denoiser + composition prior

Shipped so that `unimat generate --model pretrained:{name}` and campaigns on the bundled `{name}` source start from a
model that has seen its data. A smoke-test-sized model trained on 2 CPU cores, not the paper's model: read the
metrics below before trusting its samples.

## Data
The bundled CDVAE `{name}` **val** split ({name}'s train split is not available offline; see
`unimat_core/data/README.md` for provenance and licence), tensorized with `--crop-grid` (only the rows/columns of
the periodic table holding the dataset's elements, in table order; val and test fetched together, so the grid and
lattice normalisation cover both). The test split is held out for the metrics.

## Command
Trained in resumable pieces with `tools/pretrain.sh {name} MINUTES`, i.e.

    unimat fetch --campaign pretrain-{name} --source {name}
    unimat tensorize --campaign pretrain-{name} --crop-grid
    unimat train --campaign pretrain-{name} --threads 1 --max-minutes MINUTES --max-steps 1000000 \\
        --lr-decay-steps 60000 --batch-size 64 --keep-every 2000

Model: preset `{config['preset']}` (width {config['model']['width']}, {config['model']['blocks_per_level']} blocks,
{config['model']['heads']} heads); diffusion {d['schedule']} schedule, {d['timesteps']} steps, `{d['prediction']}`
prediction, `{d['slot_loss']}` slot loss, periodic loss {d['periodic_loss']}; AdamW lr {config['learning_rate']}
(warm-up {config['warmup_steps']} steps, cosine decay over 60,000 steps), batch {config['batch_size']}, EMA
{config['ema_decay']}, slot-permutation augmentation on, translation off, composition dropped 10 % (classifier-free
guidance). The composition prior (GRU, `unimat_core/model/composition_prior.py`) is fitted on the same split at the
start of the run and stored in the checkpoint. Files: `last.pt` (complete checkpoint: weights, EMA, optimizer,
step, prior; training resumes from it), `metrics.csv` (the training log), `config.json`.

## Steps
{steps:,} optimiser steps at batch {config['batch_size']}: {steps * config['batch_size']:,} crystals seen.

## CPU-hours
{seconds/3600:.2f} CPU-hours of training (one torch thread; wall = CPU), on an x86_64 AMD EPYC, 2 cores, no GPU,
torch 2.13.0 CPU. Budget allowed by the generator issue: 8 CPU-hours per dataset.

## Metrics
Learning curve of this run (`benchmarks/bench_learning_curve.py evaluate --dataset {name} --variant pretrained
--train-dir runs/pretrain-{name}/train`): CSP k = 1 on a seeded 100 test crystals (DDIM-50, guidance 1,
StructureMatcher stol 0.5 / ltol 0.3 / angle 10); 200 unconditional samples (composition first) against a seeded
300 of the test split for validity, coverage (CDVAE cutoffs) and EMD of density. Small samples: a quick protocol,
not CDVAE's 10,000 against the full test split (see benchmarks/RESULTS.md, "Learning curve").

| step | CPU-h | CSP match (k=1) | CSP RMSE | struct. valid | comp. valid | COV-R | COV-P | EMD density |
|---|---|---|---|---|---|---|---|---|
{rows}

Published anchors (CSP k = 1): perov_5 DiffCSP 52.02 % / 0.0760, CDVAE 45.31 % / 0.1138; carbon_24 DiffCSP
17.54 % / 0.2759. Generation (UniMat's table): perov_5 100 / 98.8 / 99.2 / 98.2, carbon_24 100 / - / 100 / 96.5.

Date: {date}.
"""
(ship / "MODEL_CARD.md").write_text(card)
print(card)
