from __future__ import annotations

import os

import pytest
import torch

from unimat_core.model.device import cpu_budget, pick_device


def test_cpu_threads_default_to_every_core_and_can_be_capped(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert pick_device("cpu").type == "cpu"
        every = torch.get_num_threads()
        assert every >= 1
        pick_device("cpu", cpu_threads=1)
        assert torch.get_num_threads() == 1
        pick_device("cpu", cpu_threads=10_000)  # capped at the cores this process may use
        assert torch.get_num_threads() == every
        with pytest.raises(ValueError, match="cpu_threads"):
            pick_device("cpu", cpu_threads=-1)
    finally:
        torch.set_num_threads(before)


def test_the_default_honours_omp_num_threads_as_torch_does(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_budget(0) == 1
    assert cpu_budget(cores) == cores  # an explicit setting wins
    monkeypatch.setenv("OMP_NUM_THREADS", "10000")
    assert cpu_budget(0) == cores  # never more than the cores
    for unreadable in ("", "two", "0", "-3"):
        monkeypatch.setenv("OMP_NUM_THREADS", unreadable)
        assert cpu_budget(0) == cores


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        pick_device("cuda")
