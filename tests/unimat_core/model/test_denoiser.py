import pytest
import torch

from unimat_core.model.config import PRESETS, DenoiserConfig, preset
from unimat_core.model.denoiser import UniMatDenoiser, timestep_embedding


@pytest.mark.parametrize("config", [DenoiserConfig(width=16, heads=2, time_dim=32),
                                    DenoiserConfig(width=16, heads=2, time_dim=32, channel_mults=(1, 2, 2))])
def test_shapes_and_gradients(config):
    model = UniMatDenoiser(config, slots=3, height=9, width=18)
    coords = torch.randn(2, 3, 9, 18, 3, requires_grad=True)
    lattice = torch.randn(2, 6)
    out_c, out_l = model(coords, lattice, torch.tensor([3, 900]), torch.rand(2, 9, 18), torch.tensor([1.0, 0.0]))
    assert out_c.shape == coords.shape and out_l.shape == (2, 6)
    (out_c.square().mean() + out_l.square().mean()).backward()
    assert coords.grad is not None and torch.isfinite(coords.grad).all()


def test_condition_and_flag_change_the_prediction():
    torch.manual_seed(0)
    model = UniMatDenoiser(DenoiserConfig(width=16, heads=2, time_dim=32), slots=2, height=9, width=18)
    with torch.no_grad():  # make the residual branches live (they start at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    coords, lattice, t = torch.randn(1, 2, 9, 18, 3), torch.randn(1, 6), torch.tensor([10])
    grid = torch.zeros(1, 9, 18)
    grid[0, 2, 0] = 0.5
    a = model(coords, lattice, t, grid, torch.ones(1))[0]
    b = model(coords, lattice, t, grid, torch.zeros(1))[0]
    assert not torch.allclose(a, b)


def test_presets_and_config_round_trip():
    assert set(PRESETS) == {"tiny", "small", "paper"}
    config = preset("small")
    assert DenoiserConfig.from_dict(config.as_dict()) == config
    with pytest.raises(KeyError):
        preset("huge")
    with pytest.raises(ValueError):
        DenoiserConfig(width=30, heads=4)


def test_timestep_embedding_distinguishes_steps():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 32)
    assert emb.shape == (3, 32) and not torch.allclose(emb[0], emb[1])
