import pytest
import torch

from tests.unimat_core.model.conftest import live
from unimat_core.model.config import DenoiserConfig
from unimat_core.model.denoiser import UniMatDenoiser
from unimat_core.model.self_conditioning import add_self_conditioning


@pytest.mark.parametrize("coord_fourier", [0, 2])
def test_a_widened_checkpoint_computes_what_the_original_did_whatever_estimate_it_reads(coord_fourier):
    torch.manual_seed(0)
    config = DenoiserConfig(width=16, heads=2, time_dim=32, coord_fourier=coord_fourier)
    original = UniMatDenoiser(config, slots=2, height=3, width=4)
    live(original)
    state = {"model": original.state_dict(), "ema": original.state_dict(), "model_config": config.as_dict(),
             "optimizer": {}, "step": 7}
    widened_state = add_self_conditioning(state)
    widened_config = DenoiserConfig.from_dict(widened_state["model_config"])
    assert widened_config.self_condition and "optimizer" not in widened_state and widened_state["step"] == 7
    widened = UniMatDenoiser(widened_config, slots=2, height=3, width=4)
    widened.load_state_dict(widened_state["ema"])
    coords, lattice = torch.randn(2, 2, 3, 4, 3), torch.randn(2, 6)
    args = (coords, lattice, torch.tensor([3, 700]), torch.rand(2, 3, 4), torch.tensor([1.0, 0.0]))
    with torch.no_grad():
        expected = original(*args)
        got = widened(*args, self_cond=(torch.rand_like(coords), torch.randn_like(lattice)))
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="already"):
        add_self_conditioning(widened_state)
