import math

import pytest
import torch

from unimat_core.model.config import DenoiserConfig, DiffusionConfig
from unimat_core.model.diffusion import Condition, GaussianDiffusion, Pinned, cosine_alpha_bar


class Oracle(torch.nn.Module):
    """Knows the single training example x0 and returns the exact eps (or v) for any x_t."""

    def __init__(self, diffusion: GaussianDiffusion, x0_c: torch.Tensor, x0_l: torch.Tensor) -> None:
        super().__init__()
        self.diffusion, self.x0_c, self.x0_l = diffusion, x0_c, x0_l

    def forward(self, x_c, x_l, t, cond, flag):
        ab_c = self.diffusion.alpha_bar[t].view(-1, 1, 1, 1, 1)
        ab_l = self.diffusion.alpha_bar[t].view(-1, 1)
        outs = []
        for x, x0, ab in ((x_c, self.x0_c, ab_c), (x_l, self.x0_l, ab_l)):
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            outs.append(eps if self.diffusion.config.prediction == "eps" else ab.sqrt() * eps - (1 - ab).sqrt() * x0)
        return tuple(outs)


def _example():
    x0_c = torch.full((1, 2, 9, 18, 3), -1.0)
    x0_c[0, 0, 2, 0] = torch.tensor([0.1, 0.5, 0.9])  # one Li atom
    x0_l = torch.tensor([[0.2, -0.1, 0.3, 0.0, 0.5, -0.5]])
    return x0_c, x0_l


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize(("steps", "eta"), [(20, 0.0), (1000, 1.0)])
def test_sampler_recovers_the_data_given_the_exact_denoiser(prediction, steps, eta):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    x0_c, x0_l = _example()
    cond = Condition.unconditional(1, 9, 18, torch.device("cpu"))
    c, l = diffusion.sample(Oracle(diffusion, x0_c, x0_l), tuple(x0_c.shape), cond, steps=steps, eta=eta,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(c, x0_c, atol=1e-4, rtol=0)
    torch.testing.assert_close(l, x0_l, atol=1e-4, rtol=0)


@pytest.mark.parametrize("solver", ["dpm++2m", "dpm++2m-sde"])
@pytest.mark.parametrize("steps", [5, 20])
def test_dpm_solver_recovers_the_data_given_the_exact_denoiser(steps, solver):
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0_c, x0_l = _example()
    cond = Condition.unconditional(1, 9, 18, torch.device("cpu"))
    c, l = diffusion.sample(Oracle(diffusion, x0_c, x0_l), tuple(x0_c.shape), cond, steps=steps, solver=solver,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(c, x0_c, atol=1e-4, rtol=0)
    torch.testing.assert_close(l, x0_l, atol=1e-4, rtol=0)


class GaussianOracle(torch.nn.Module):
    """The exact eps-predictor for data ~ N(mean, std^2) per entry: its probability-flow ODE maps the noise to
    the data exactly, so a sampler's distance to the many-step solution measures its discretisation error."""

    def __init__(self, diffusion: GaussianDiffusion, mean: float, std: float) -> None:
        super().__init__()
        self.diffusion, self.mean, self.var = diffusion, mean, std**2

    def forward(self, x_c, x_l, t, cond, flag):
        outs = []
        for x in (x_c, x_l):
            ab = self.diffusion.alpha_bar[t].view(-1, *[1] * (x.dim() - 1))
            x0 = self.mean + ab.sqrt() * self.var / (ab * self.var + 1 - ab) * (x - ab.sqrt() * self.mean)
            outs.append((x - ab.sqrt() * x0) / (1 - ab).sqrt())
        return tuple(outs)


def test_dpm_solver_is_closer_to_the_exact_flow_than_ddim_at_equal_model_calls():
    diffusion = GaussianDiffusion(DiffusionConfig())
    oracle, shape = GaussianOracle(diffusion, mean=0.2, std=0.2), (64, 1, 2, 3, 3)
    cond = Condition.unconditional(64, 2, 3, torch.device("cpu"))

    def run(solver: str, steps: int) -> torch.Tensor:
        return diffusion.sample(oracle, shape, cond, steps=steps, solver=solver,
                                generator=torch.Generator().manual_seed(1))[0]

    exact = run("ddim", 1000)
    assert abs(exact.std().item() - 0.2) < 0.03 and abs(exact.mean().item() - 0.2) < 0.03  # it is the data law
    error = {solver: (run(solver, 10) - exact).abs().mean().item() for solver in ("ddim", "dpm++2m")}
    assert error["dpm++2m"] < error["ddim"] / 4, error  # measured: 0.0067 vs 0.050


def test_sde_step_is_the_second_order_sde_dpm_solver_update():
    """One multistep update against SDE-DPM-Solver++(2M) written out in VP form (Lu et al. 2022; k-diffusion's
    midpoint variant): x' = (s'/s) e^-h x + a' (1 - e^-2h) D + s' sqrt(1 - e^-2h) z, D = x0 + (x0 - x0_prev) / 2r."""
    g = torch.Generator().manual_seed(0)
    x, x0, prev, z = (torch.randn(4, 3, generator=g) for _ in range(4))
    lattice = torch.zeros(4, 6)
    ab, ab_next, h_prev = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64), 0.4
    lam = lambda a: 0.5 * torch.log(a / (1 - a))  # noqa: E731
    h = float(lam(ab_next) - lam(ab))
    r = h_prev / h
    d = x0 + (x0 - prev) / (2 * r)
    expected = (((1 - ab_next) / (1 - ab)).sqrt() * math.exp(-h) * x + ab_next.sqrt() * -math.expm1(-2 * h) * d
                + (1 - ab_next).sqrt() * math.sqrt(-math.expm1(-2 * h)) * z)
    got, _, memo = GaussianDiffusion._dpm_step(x, lattice, x0, lattice, ab, ab_next, (prev, lattice, h_prev),
                                               (z, torch.zeros_like(lattice)))
    torch.testing.assert_close(got, expected.float(), atol=1e-6, rtol=0)
    assert memo[2] == pytest.approx(h)


@pytest.mark.parametrize(("solver", "eta"), [("dpm++2m-sde", 0.0), ("ddim", 1.0)])
def test_noise_scale_samples_the_stochastic_solvers_at_a_lower_temperature(solver, eta):
    """Data ~ N(0.2, 0.2^2): scaling the fresh noise by s keeps the mean and shrinks the spread s-fold (the
    low-temperature sampling the shipped perov_5 model is recommended); 1 is the sampler as derived, bit for bit."""
    diffusion = GaussianDiffusion(DiffusionConfig())
    oracle, shape = GaussianOracle(diffusion, mean=0.2, std=0.2), (256, 1, 2, 3, 3)
    cond = Condition.unconditional(256, 2, 3, torch.device("cpu"))

    def run(**scale) -> torch.Tensor:
        return diffusion.sample(oracle, shape, cond, steps=20, solver=solver, eta=eta,
                                generator=torch.Generator().manual_seed(2), **scale)[0]

    full, half = run(), run(noise_scale=0.5)
    assert torch.equal(full, run(noise_scale=1.0))
    assert abs(half.mean().item() - 0.2) < 0.01
    assert half.std().item() / full.std().item() == pytest.approx(0.5, abs=0.03)  # measured 0.6: 0.600, 0.4: 0.400


def test_noise_scale_leaves_the_deterministic_solvers_alone():
    diffusion = GaussianDiffusion(DiffusionConfig())
    oracle, shape = GaussianOracle(diffusion, mean=0.2, std=0.2), (8, 1, 2, 3, 3)
    cond = Condition.unconditional(8, 2, 3, torch.device("cpu"))
    for solver in ("dpm++2m", "ddim"):
        runs = [diffusion.sample(oracle, shape, cond, steps=5, solver=solver, noise_scale=scale,
                                 generator=torch.Generator().manual_seed(0))[0] for scale in (1.0, 0.3)]
        assert torch.equal(*runs), solver


def test_sde_solver_draws_the_data_law_and_forgets_where_it_started():
    """Data ~ N(0.2, 0.2^2): the stochastic solver's samples have the data's mean and spread, closer with more
    steps, and keep no memory of the noise they started from, unlike the deterministic solver's: what keeps two
    interchangeable slots from riding one path onto one site."""
    diffusion = GaussianDiffusion(DiffusionConfig())
    oracle, shape = GaussianOracle(diffusion, mean=0.2, std=0.2), (256, 1, 2, 3, 3)
    cond = Condition.unconditional(256, 2, 3, torch.device("cpu"))

    def run(solver: str, steps: int) -> torch.Tensor:
        return diffusion.sample(oracle, shape, cond, steps=steps, solver=solver, generator=torch.Generator().manual_seed(2))[0]

    short, long = run("dpm++2m-sde", 20), run("dpm++2m-sde", 200)
    # measured: std 0.213 at 20 steps, 0.199 at 200 (seeds 2-7: 0.207-0.214 at 20)
    assert abs(short.mean().item() - 0.2) < 0.01 and abs(short.std().item() - 0.2) < 0.02
    assert abs(long.std().item() - 0.2) < abs(short.std().item() - 0.2)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(2))  # the solver's first draw: its start

    def memory(end: torch.Tensor) -> float:
        """Correlation of the samples with the noise they started from."""
        return torch.corrcoef(torch.stack([start.flatten(), end.flatten()]))[0, 1].item()

    assert memory(run("dpm++2m", 20)) > 0.99  # a deterministic map of the start
    assert abs(memory(short)) < 0.1  # measured 0.002


def test_unknown_solver_is_refused():
    diffusion = GaussianDiffusion(DiffusionConfig())
    cond = Condition.unconditional(1, 2, 3, torch.device("cpu"))
    with pytest.raises(ValueError, match="solver"):
        diffusion.sample(GaussianOracle(diffusion, 0.0, 1.0), (1, 1, 2, 3, 3), cond, solver="euler")


def test_cosine_schedule_is_monotone_and_ends_noisy():
    ab = cosine_alpha_bar(1000)
    assert (ab[1:] < ab[:-1]).all() and ab[0] > 0.999 and ab[-1] < 1e-3


def test_pinned_sampling_gives_exact_slots():
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0_c, x0_l = _example()
    atom_mask = torch.zeros(2, 2, 9, 18, dtype=torch.bool)
    atom_mask[0, 0, 2, 0] = True
    rows = torch.tensor([True, False])
    pinned = Pinned(null_mask=~atom_mask & rows.view(-1, 1, 1, 1), atom_mask=atom_mask, rows=rows, null_value=-1.0)
    model = Oracle(diffusion, torch.cat([x0_c, x0_c]), torch.cat([x0_l, x0_l]))
    cond = Condition(torch.zeros(2, 9, 18), torch.tensor([1.0, 0.0]))
    c, _ = diffusion.sample(model, (2, 2, 9, 18, 3), cond, steps=10, pinned=pinned, generator=torch.Generator().manual_seed(1))
    assert (c[0][~atom_mask[0]] == -1).all()
    assert ((c[0, 0, 2, 0] >= 0) & (c[0, 0, 2, 0] < 1)).all()
    torch.testing.assert_close(c[1], x0_c[0], atol=1e-4, rtol=0)  # the free row is left as sampled


def test_loss_is_finite_and_reports_parts():
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0_c, x0_l = _example()
    model = Oracle(diffusion, x0_c, x0_l)
    loss, parts = diffusion.loss(model, x0_c, x0_l, Condition.unconditional(1, 9, 18, torch.device("cpu")))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert set(parts) == {"loss", "loss_atoms", "loss_empty", "loss_lattice"}


class Offset(torch.nn.Module):
    """The oracle's prediction plus a fixed error: `atom_error` on atom slots, `empty_error` on empty ones."""

    def __init__(self, oracle: Oracle, atom_error: float, empty_error: float) -> None:
        super().__init__()
        self.oracle, self.atom_error, self.empty_error = oracle, atom_error, empty_error

    def forward(self, x_c, x_l, t, cond, flag):
        out_c, out_l = self.oracle(x_c, x_l, t, cond, flag)
        atoms = (self.oracle.x0_c.mean(-1, keepdim=True) > -0.5).float()
        return out_c + self.atom_error * atoms + self.empty_error * (1 - atoms), out_l


@pytest.mark.parametrize(("slot_loss", "expected"), [
    # one atom slot (error 1) among 2*9*18 = 324 slots, the other 323 with error 0.1
    ("slots", (1.0 + 323 * 0.01) / 324),
    ("balanced", 1.0 + 0.01),
])
def test_slot_loss_weighs_atom_and_empty_slots_as_configured(slot_loss, expected):
    diffusion = GaussianDiffusion(DiffusionConfig(slot_loss=slot_loss))
    x0_c, x0_l = _example()
    model = Offset(Oracle(diffusion, x0_c, x0_l), atom_error=1.0, empty_error=0.1)
    loss, parts = diffusion.loss(model, x0_c, x0_l, Condition.unconditional(1, 9, 18, torch.device("cpu")))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert parts["loss_atoms"] == pytest.approx(1.0) and parts["loss_empty"] == pytest.approx(0.01)


def test_old_checkpoint_configs_keep_the_loss_they_were_trained_with():
    old = {"timesteps": 1000, "schedule": "cosine", "prediction": "eps", "lattice_loss_weight": 1.0,
           "atom_loss_weight": 1.0, "cond_drop_prob": 0.1}
    assert DiffusionConfig.from_dict(old).slot_loss == "balanced"
    assert DiffusionConfig.from_dict(DiffusionConfig().as_dict()) == DiffusionConfig()


def test_periodic_loss_targets_the_image_of_an_atom_nearest_the_model_estimate():
    """An atom at 0.02 that the model places at 0.97 is asked for 1.02 (the same place), not to cross the cell."""
    diffusion = GaussianDiffusion(DiffusionConfig(periodic_loss=True, prediction="eps"))
    coords = torch.tensor([0.02, 0.98, 0.5, -1.0]).view(1, 4, 1, 1, 1).expand(1, 4, 1, 1, 3).contiguous()
    atoms = (coords.mean(-1) > -0.5).float()
    t = torch.tensor([10])
    x_t = diffusion.q_sample(coords, t, torch.zeros_like(coords))
    estimate = torch.tensor([0.97, 0.01, 0.52, -0.2]).view(1, 4, 1, 1, 1).expand(1, 4, 1, 1, 3)
    ab = diffusion.alpha_bar[10]
    pred_eps = (x_t - ab.sqrt() * estimate) / (1 - ab).sqrt()  # the eps whose x0 estimate is `estimate`
    target = diffusion._periodic_target(coords, x_t, pred_eps, atoms, t)
    image = (x_t - (1 - ab).sqrt() * target) / ab.sqrt()
    assert torch.allclose(image[0, :, 0, 0, 0], torch.tensor([1.02, -0.02, 0.5, -1.0]), atol=1e-4)


def test_quadratic_training_timesteps_put_half_the_draws_below_a_quarter_of_the_schedule():
    """t = T u^2: P(t < T/4) = 1/2 and P(t < T/100) = 1/10, against 1/4 and 1/100 for uniform draws."""
    generator = torch.Generator().manual_seed(0)
    for kind, below_quarter, below_hundredth in (("uniform", 0.25, 0.01), ("quadratic", 0.5, 0.1)):
        diffusion = GaussianDiffusion(DiffusionConfig(train_timesteps=kind))
        t = diffusion._training_timesteps(40_000, torch.device("cpu"), generator)
        assert int(t.min()) >= 0 and int(t.max()) <= 999
        assert (t < 250).float().mean().item() == pytest.approx(below_quarter, abs=0.01)
        assert (t < 10).float().mean().item() == pytest.approx(below_hundredth, abs=0.005)


def test_training_timesteps_setting_leaves_old_checkpoint_configs_unchanged():
    """A config at the default writes no `train_timesteps` key, so checkpoints saved before it read and write
    back the same; a quadratic one keeps it."""
    assert "train_timesteps" not in DiffusionConfig().as_dict()
    assert DiffusionConfig(train_timesteps="quadratic").as_dict()["train_timesteps"] == "quadratic"
    assert DiffusionConfig.from_dict(DiffusionConfig(train_timesteps="quadratic").as_dict()).train_timesteps == "quadratic"


class SelfConditionedOracle(Oracle):
    """The oracle, declared self-conditioned; records the previous estimate each call receives."""

    config = DenoiserConfig(width=8, heads=2, time_dim=8, self_condition=True)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.received: list = []

    def forward(self, x_c, x_l, t, cond, flag, self_cond=None):
        self.received.append(self_cond)
        return super().forward(x_c, x_l, t, cond, flag)


def test_sampler_feeds_a_self_conditioned_model_the_last_clean_estimate():
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0_c, x0_l = _example()
    model = SelfConditionedOracle(diffusion, x0_c, x0_l)
    cond = Condition(torch.zeros(1, 9, 18), torch.ones(1))
    diffusion.sample(model, x0_c.shape, cond, steps=5, solver="dpm++2m-sde", guidance=1.0,
                     generator=torch.Generator().manual_seed(0))
    assert model.received[0] is None and len(model.received) == 5
    # the oracle's estimate is the crystal, for both halves (to float32 rounding, amplified at high noise)
    for previous_c, previous_l in model.received[1:]:
        assert previous_c.shape[0] == 2  # guidance doubles the batch, the estimate with it
        torch.testing.assert_close(previous_c, torch.cat([x0_c, x0_c]), atol=1e-2, rtol=0)
        torch.testing.assert_close(previous_l, torch.cat([x0_l, x0_l]), atol=1e-2, rtol=0)


def test_training_feeds_a_self_conditioned_model_its_own_estimate_on_about_half_the_batches():
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0_c, x0_l = _example()
    model = SelfConditionedOracle(diffusion, x0_c, x0_l)
    generator = torch.Generator().manual_seed(0)
    batches = 40
    for _ in range(batches):
        diffusion.loss(model, x0_c, x0_l, Condition.unconditional(1, 9, 18, torch.device("cpu")), generator=generator)
    # per batch: either the zeros alone, or a no-gradient first pass (with zeros) then its estimate
    graded = [received for received in model.received if received[0].abs().sum() > 0]
    assert 10 <= len(graded) <= 30 and len(model.received) == batches + len(graded)
    for previous_c, previous_l in graded:
        assert not previous_c.requires_grad
        torch.testing.assert_close(previous_c, x0_c, atol=1e-2, rtol=0)
        torch.testing.assert_close(previous_l, x0_l, atol=1e-2, rtol=0)
