"""Sampling throughput on CPU: how the thread budget is best spent, and what the attention kernel costs.

    python benchmarks/bench_sampling_throughput.py --model pretrained:perov_5 --samples 1000 --batch-size 100

Rows (same model, sampler, seeds and batches; only how they run differs):
- one batch at a time on 1 torch thread, then on every core (intra-op threads);
- batches in lanes: one per core at once, one thread each (what `generate` and `unimat evaluate --task csp` do);
and the denoiser's attention at the shipped model's shapes: torch's nn.MultiheadAttention against the
scaled_dot_product_attention path the denoiser uses (same weights). Prints a table; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "runs" / "sampling_throughput"


def time_generation(loaded, config, threads: int, lanes: int) -> float:
    """Seconds to sample every batch of `config` with `threads` torch threads shared by `lanes` lanes."""
    from unimat_core.model.generation import generate_part, plan_batches
    from unimat_core.model.lanes import map_in_lanes

    shutil.rmtree(config.out_dir, ignore_errors=True)
    batches = plan_batches(config, loaded.spec)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    list(map_in_lanes(lambda b: generate_part(config, b, batches[b], loaded), range(len(batches)), lanes))
    return time.perf_counter() - start


def time_attention(loaded, batch: int, repeats: int = 3) -> list[tuple[str, float, float]]:
    """(axis, nn.MultiheadAttention s, denoiser path s) per call on one thread, guided batch shapes."""
    from unimat_core.model.denoiser import AxisAttention

    torch.set_num_threads(1)
    layers = {layer.over: layer for layer in loaded.model.modules() if isinstance(layer, AxisAttention)}
    slots, height, width = loaded.spec.shape[:3]
    rows = []
    for axis, layer in sorted(layers.items()):
        channels = layer.attention.embed_dim
        n, length = (2 * batch * height * width, slots) if axis == "slots" else (2 * batch * slots, height * width)
        seq = torch.randn(n, length, channels)
        timings = []
        for run in (lambda: layer.attention(seq, seq, seq, need_weights=False), lambda: layer._attend(seq, None)):
            with torch.inference_mode():
                run()
                start = time.perf_counter()
                for _ in range(repeats):
                    run()
            timings.append((time.perf_counter() - start) / repeats)
        rows.append((axis, *timings))
    return rows


def main() -> None:
    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.config import GenerateConfig
    from unimat_core.model.device import cpu_budget
    from unimat_core.model.pretrained import resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:perov_5")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's recommended weight")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's recommended count")
    o = parser.parse_args()

    path = resolve(o.model)
    loaded = load_model(path, "cpu")
    cores = cpu_budget(0)
    config = GenerateConfig(checkpoint=str(path), out_dir=str(OUT / "samples"), num_samples=o.samples,
                            batch_size=o.batch_size, guidance=o.guidance, steps=o.steps,
                            device="cpu")
    config = loaded.recommended(config)
    print(f"{o.model} step {loaded.step}, {o.samples} composition-first samples, {config.sampler} "
          f"{config.steps} steps, guidance {config.guidance:g}, batch {o.batch_size}, {cores} cores ({os.uname().nodename})")
    print("| how | torch threads per batch | batches at once | s | min / 10k samples |\n|---|---|---|---|---|")
    for label, threads, lanes in [("one batch at a time", 1, 1), ("one batch at a time", cores, 1),
                                  ("lanes (the default)", cores, cores)]:
        seconds = time_generation(loaded, config, threads, lanes)
        per_thread = 1 if lanes > 1 else threads
        print(f"| {label} | {per_thread} | {lanes} | {seconds:.1f} | {seconds / o.samples * 10_000 / 60:.2f} |",
              flush=True)
    print("\n| attention over | nn.MultiheadAttention s/call | denoiser (SDPA) s/call | speed-up |\n|---|---|---|---|")
    for axis, native, ours in time_attention(loaded, o.batch_size):
        print(f"| {axis} | {native:.4f} | {ours:.4f} | {native / ours:.2f}x |")


if __name__ == "__main__":
    main()
