import pytest
import torch

from tests.unimat_core.model.conftest import live
from unimat_core.model.config import PRESETS, DenoiserConfig, preset
from unimat_core.model.denoiser import AxisAttention, GridConv, UniMatDenoiser, timestep_embedding


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
    live(model)
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


@pytest.mark.parametrize("slot_embedding", [False, True])
def test_without_slot_embedding_the_denoiser_is_equivariant_to_slot_order(slot_embedding):
    """Training shuffles the slots of every element, so the slot index is noise; without its embedding,
    permuting the slots of the input permutes the prediction and changes nothing else."""
    torch.manual_seed(0)
    config = DenoiserConfig(width=16, heads=2, time_dim=32, slot_embedding=slot_embedding, coord_fourier=4, pair_bias=3,
                            pair_distances=4, pair_displacement=True, pair_messages=True)
    model = live(UniMatDenoiser(config, slots=4, height=3, width=4)).eval()
    coords, lattice, t = torch.randn(2, 4, 3, 4, 3), torch.randn(2, 6), torch.tensor([10, 500])
    cond, flag = torch.rand(2, 3, 4), torch.ones(2)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        c, lat = model(coords, lattice, t, cond, flag)
        c_perm, lat_perm = model(coords[:, order], lattice, t, cond, flag)
    equivariant = torch.allclose(c_perm, c[:, order], atol=1e-5) and torch.allclose(lat_perm, lat, atol=1e-5)
    assert equivariant is not slot_embedding


def test_fourier_features_are_periodic_in_the_coordinate():
    model = UniMatDenoiser(DenoiserConfig(width=16, heads=2, time_dim=32, coord_fourier=3), slots=2, height=3, width=4)
    x = torch.rand(1, 2, 3, 4, 3)
    a, b = model._coordinate_features(x), model._coordinate_features(x + 1.0)
    assert a.shape[-1] == 3 * (1 + 2 * 3)
    assert torch.allclose(a[..., 3:], b[..., 3:], atol=1e-4)  # the features; the raw coordinate stays beside them
    assert torch.equal(b[..., :3], x + 1.0)


def test_configs_from_before_the_new_fields_build_the_same_model():
    """Shipped checkpoints' model configs predate `slot_embedding`/`coord_fourier`/`pair_bias`: they read back
    as before."""
    old = preset("tiny").as_dict()
    assert not {"slot_embedding", "coord_fourier", "pair_bias"} & set(old)  # written only when set
    config = DenoiserConfig.from_dict(old)
    assert config.slot_embedding and config.coord_fourier == 0 and config.pair_bias == 0
    assert DenoiserConfig.from_dict(preset("tiny", coord_fourier=8).as_dict()).coord_fourier == 8
    assert DenoiserConfig.from_dict(preset("tiny", pair_bias=4).as_dict()).pair_bias == 4
    names = set(UniMatDenoiser(config, slots=2, height=3, width=4).state_dict())
    assert "slot_embedding" in names and "frequencies" not in names and not any("pair" in n for n in names)


@pytest.mark.parametrize("mults", [(1,), (1, 2)])
def test_pair_bias_reads_the_periodic_separation_of_slots(mults):
    """The slot attention's bias depends on x_i - x_j modulo the cell (shifting atoms by whole cell vectors
    changes nothing it sees), and every slot-attention layer at the input's resolution uses it."""
    torch.manual_seed(0)
    config = DenoiserConfig(width=16, heads=2, time_dim=32, channel_mults=mults, slot_embedding=False, pair_bias=3)
    model = live(UniMatDenoiser(config, slots=4, height=3, width=4)).eval()
    coords, lattice, t = torch.rand(2, 4, 3, 4, 3), torch.randn(2, 6), torch.tensor([10, 500])
    cond, flag = torch.rand(2, 3, 4), torch.ones(2)
    with torch.no_grad():
        bias = model.down_blocks[0][0].pair_bias(model.pair_features(coords, lattice))
        shifted = model.down_blocks[0][0].pair_bias(model.pair_features(coords + 1.0, lattice))
        assert bias.shape == (2 * 3 * 4 * 2, 4, 4) and bias.abs().max() > 0
        assert torch.allclose(bias, shifted, atol=1e-4)
        c, _ = model(coords, lattice, t, cond, flag)
        biased = [block.pair_bias for blocks in [*model.down_blocks[:1], *model.up_blocks[-1:]] for block in blocks]
        assert len(biased) == 2 * len(mults) and all(b is not None for b in biased)
        for layer in biased:
            layer.out.weight.zero_()
            layer.out.bias.zero_()
        c_unbiased, _ = model(coords, lattice, t, cond, flag)
    assert not torch.allclose(c, c_unbiased, atol=1e-4)


def test_pair_distances_are_the_minimum_image_distances_in_angstrom():
    """The cell read off the encoded lattice is pymatgen's, and each slot pair's distance is the crystal's."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    from unimat_core.lattice_encoding import LatticeEncoding, lattice_matrices
    from unimat_core.model.denoiser import PairFeatures, cell_matrices

    encoding = LatticeEncoding(log_length_mean=1.4, log_length_std=0.3, angle_scale=25.0)
    parameters = np.array([[3.1, 4.2, 5.3, 80.0, 95.0, 105.0], [2.5, 2.5, 6.0, 90.0, 90.0, 120.0]])
    encoded = torch.from_numpy(encoding.encode(parameters))
    assert np.allclose(cell_matrices(encoded, encoding).numpy(), lattice_matrices(parameters), atol=1e-4)

    frac = np.array([[0.05, 0.1, 0.9], [0.95, 0.2, 0.1], [0.5, 0.5, 0.5]])
    structure = Structure(Lattice.from_parameters(*parameters[0]), ["C"] * 3, frac)
    features = PairFeatures(frequencies=2, distances=61, encoding=encoding)
    coords = torch.from_numpy(frac).float()[None, :, None, None]  # [1, L=3, H=1, W=1, 3]
    captured = {}
    features.net.register_forward_hook(lambda module, inputs, output: captured.update(inputs=inputs[0]))
    features(coords, encoded[:1])
    basis = captured["inputs"][0, ..., 6 * 2: 6 * 2 + 61]  # [L, L, 61]
    nearest_centre = features.centres[basis.argmax(-1)].numpy()
    assert np.allclose(nearest_centre, structure.distance_matrix, atol=0.05 + 1e-6)


def test_pair_displacement_moves_atoms_along_their_nearest_image_separations():
    from unimat_core.model.denoiser import PairDisplacement

    head = PairDisplacement(channels=4, hidden=8)
    with torch.no_grad():
        head.out.bias.fill_(1.0)  # every weight w_ij = 1: the mean separation from the other slots
    x = torch.zeros(1, 2, 1, 1, 4)
    pairs = torch.zeros(1, 2, 2, 8)
    inside = torch.tensor([[0.1, 0.5, 0.5], [0.3, 0.5, 0.5]]).view(1, 2, 1, 1, 3)
    across = torch.tensor([[0.05, 0.5, 0.5], [0.95, 0.5, 0.5]]).view(1, 2, 1, 1, 3)
    assert torch.allclose(head(x, inside, pairs)[0, :, 0, 0, 0], torch.tensor([0.1, -0.1]), atol=1e-6)
    assert torch.allclose(head(x, across, pairs)[0, :, 0, 0, 0], torch.tensor([-0.05, 0.05]), atol=1e-6)


@pytest.mark.parametrize("option", ["pair_displacement", "pair_messages"])
def test_pair_outputs_need_pair_features(option):
    with pytest.raises(ValueError, match=option):
        DenoiserConfig(width=16, heads=2, time_dim=32, **{option: True})


def test_pair_messages_carry_a_neighbours_geometry_into_the_atom():
    """Two cells whose atom 0 sits at the same place and differs only in where its neighbour is: without
    messages (and without slot attention) atom 0's prediction cannot tell them apart; with messages it does."""
    torch.manual_seed(0)
    coords = torch.tensor([[0.1, 0.5, 0.5], [0.3, 0.5, 0.5]]).view(1, 2, 1, 1, 3).repeat(2, 1, 1, 1, 1)
    coords[1, 1, 0, 0, 0] = 0.6
    lattice, t, cond, flag = torch.zeros(2, 6), torch.tensor([5, 5]), torch.ones(2, 1, 1), torch.ones(2)
    predictions = []
    for messages in (False, True):
        config = DenoiserConfig(width=16, heads=2, time_dim=32, slot_attention=False, slot_embedding=False,
                                pair_bias=2, pair_messages=messages)
        model = live(UniMatDenoiser(config, slots=2, height=1, width=1)).eval()
        with torch.no_grad():
            predictions.append(model(coords, lattice, t, cond, flag)[0][:, 0])
    assert torch.allclose(predictions[0][0], predictions[0][1], atol=1e-6)
    assert not torch.allclose(predictions[1][0], predictions[1][1], atol=1e-4)


@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_matches_torch_multihead_attention_on_the_same_weights(with_bias):
    torch.manual_seed(0)
    layer = AxisAttention(channels=16, heads=4, global_dim=8, over="slots")
    torch.nn.init.normal_(layer.attention.out_proj.weight)  # it starts at zero
    seq = torch.randn(6, 3, 16)
    bias = torch.randn(6 * 4, 3, 3) if with_bias else None
    expected, _ = layer.attention(seq, seq, seq, need_weights=False, attn_mask=bias)
    assert torch.allclose(layer._attend(seq, bias), expected, atol=1e-5)


def test_one_cell_grid_takes_the_cheap_path_with_the_same_numbers():
    """On a 1x1 grid (carbon_24's cropped grid) the 3x3 convolution is its centre tap and attention over the one
    cell is its value vector: the shortcuts give what the general layers give, gradients included."""
    torch.manual_seed(0)
    conv, attention = GridConv(16, 8, 0.0), AxisAttention(channels=16, heads=4, global_dim=8, over="grid")
    for layer in (conv.conv2, attention.attention.out_proj):  # both start at zero
        torch.nn.init.normal_(layer.weight)
    x, g = torch.randn(5, 24, 1, 1, 16), torch.randn(5, 8)

    y = torch.nn.functional.silu(conv.film(x, g)).reshape(5 * 24, 1, 1, 16).permute(0, 3, 1, 2)
    expected_conv = x + conv.conv2(torch.nn.functional.silu(conv.conv1(y))).permute(0, 2, 3, 1).reshape(x.shape)
    assert torch.allclose(conv(x, g), expected_conv, atol=1e-5)

    seq = attention.film(x, g).reshape(5 * 24, 1, 16)
    expected_attention = x + attention.attention(seq, seq, seq, need_weights=False)[0].reshape(x.shape)
    assert torch.allclose(attention(x, g), expected_attention, atol=1e-5)

    conv(x, g).sum().backward()
    assert conv.conv1.weight.grad[:, :, 1, 1].abs().sum() > 0  # the centre tap learns
    assert conv.conv1.weight.grad[:, :, 0, 0].abs().sum() == 0  # the padding taps see zeros, as in a convolution


def test_self_conditioned_denoiser_reads_its_previous_estimate():
    torch.manual_seed(0)
    config = DenoiserConfig(width=16, heads=2, time_dim=32, self_condition=True)
    model = UniMatDenoiser(config, slots=2, height=3, width=4)
    live(model)
    coords, lattice, t = torch.randn(2, 2, 3, 4, 3), torch.randn(2, 6), torch.tensor([5, 500])
    args = (coords, lattice, t, torch.zeros(2, 3, 4), torch.ones(2))
    zeros = (torch.zeros_like(coords), torch.zeros_like(lattice))
    without = model(*args)
    torch.testing.assert_close(without, model(*args, self_cond=zeros))  # no estimate yet = zeros
    for changed in ((torch.rand_like(coords), zeros[1]), (zeros[0], torch.randn_like(lattice))):
        with_estimate = model(*args, self_cond=changed)
        assert not torch.allclose(without[0], with_estimate[0])
    # written only when set: configs from before the option read back without it
    assert "self_condition" not in preset("tiny").as_dict()
    assert DenoiserConfig.from_dict(config.as_dict()).self_condition


def test_a_denoiser_without_self_conditioning_ignores_an_estimate():
    model = UniMatDenoiser(DenoiserConfig(width=16, heads=2, time_dim=32), slots=2, height=3, width=4)
    coords, lattice = torch.randn(1, 2, 3, 4, 3), torch.randn(1, 6)
    args = (coords, lattice, torch.tensor([10]), torch.zeros(1, 3, 4), torch.ones(1))
    torch.testing.assert_close(model(*args), model(*args, self_cond=(torch.rand_like(coords), lattice)))
