"""Device choice: CUDA when present, else CPU with every core."""

from __future__ import annotations

import os

import torch


def pick_device(requested: str = "auto", cpu_threads: int = 0) -> torch.device:
    """`cpu_threads=0` uses every core this process may run on (OMP_NUM_THREADS where set); set it lower when
    several jobs share a machine (torch's intra-op threads degrade ~10x when the cores are oversubscribed)."""
    if cpu_threads < 0:
        raise ValueError(f"cpu_threads must be >= 0 (0 = all cores), got {cpu_threads}")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
    if device.type == "cpu":
        torch.set_num_threads(cpu_budget(cpu_threads))
    return device


def cpu_budget(cpu_threads: int = 0) -> int:
    """Torch threads for a `cpu_threads` setting, never more than the cores this process may run on. For 0: every
    such core, or OMP_NUM_THREADS where it is set (torch's own default honours it; schedulers and parallel test
    runs set it to keep jobs that share a machine off each other's cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cpu_threads or _omp_threads() or cores, cores)


def _omp_threads() -> int:
    """OMP_NUM_THREADS as a positive int, 0 when unset or not one (OpenMP's own rule: ignore what it cannot read)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 0


def autocast(device: torch.device):
    """bf16 mixed precision on GPU; a no-op context on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
