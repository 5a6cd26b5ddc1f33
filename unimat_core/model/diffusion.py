"""Gaussian diffusion (DDPM) over UniMat tensors: training loss, DDPM/DDIM sampling, guidance.

Coordinates live in [-1, 1) already (null = -1, atoms in [0, 1)), so they are diffused as is;
lattice parameters are the normalised 6-vector of `LatticeEncoding`. Both share one timestep.

Sampling uses the DDIM update with a chosen number of steps: eta=0 is the deterministic DDIM
sampler, eta=1 the ancestral DDPM sampler (on all T steps it is exactly DDPM). `solver="dpm++2m"` is the
multistep DPM-Solver++ (Lu et al., 2022): second order in the clipped x0 estimates, deterministic, and as
good in ~15 model calls as DDIM in 50, which is what makes 10,000 samples cheap on a CPU. `solver="dpm++2m-sde"`
is its stochastic twin (SDE-DPM-Solver++(2M), same paper): each step also forgets part of the sample and re-noises
it, as ancestral DDPM does, so interchangeable slots started close together do not ride one deterministic path
onto one site (what the deterministic samplers do to carbon_24), at a few dozen model calls instead of DDPM's 100+.
`noise_scale` scales the fresh noise a stochastic sampler injects at each step (not the starting noise): 1 samples
the model's distribution, below 1 at a lower temperature that stays closer to the denoiser's estimate (sharper, less
diverse samples; the shipped models sample best at 0.6 and 0.4, benchmarks/RESULTS.md "Low-temperature sampling").
Classifier-free guidance: eps = eps_c + w (eps_c - eps_u). A self-conditioned denoiser (DenoiserConfig.self_condition)
also reads the previous step's clean estimate; training teaches it that on half the batches.
Composition-conditioned sampling also pins slots that must be empty (inpainting): at every
step they are reset to the null location noised to the current level, and at the end the
requested number of atoms per element is enforced exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from unimat_core.model.config import DiffusionConfig


SOLVERS = ("ddim", "dpm++2m", "dpm++2m-sde")


def cosine_alpha_bar(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) for t = 1..T (float64)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def linear_alpha_bar(timesteps: int) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


@dataclass
class Condition:
    """Composition grid [B, H, W] (counts / L) and per-sample flag [B] (1 = conditioned)."""

    grid: torch.Tensor
    flag: torch.Tensor

    @classmethod
    def unconditional(cls, batch: int, height: int, width: int, device: torch.device) -> Condition:
        return cls(torch.zeros(batch, height, width, device=device), torch.zeros(batch, device=device))


@dataclass
class Pinned:
    """Known slots of composition-conditioned rows.

    null_mask / atom_mask [B, L, H, W]: slots that must be empty / must hold an atom;
    rows [B]: which samples are conditioned (the others are left as sampled).
    """

    null_mask: torch.Tensor
    atom_mask: torch.Tensor
    rows: torch.Tensor
    null_value: float


def _self_conditioned(model: nn.Module) -> bool:
    """Whether the denoiser reads its previous clean estimate (DenoiserConfig.self_condition)."""
    return bool(getattr(getattr(model, "config", None), "self_condition", False))


class GaussianDiffusion(nn.Module):
    def __init__(self, config: DiffusionConfig, null_value: float = -1.0) -> None:
        super().__init__()
        self.config = config
        self.null_value = null_value
        schedule = cosine_alpha_bar if config.schedule == "cosine" else linear_alpha_bar
        alpha_bar = schedule(config.timesteps)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    def _ab(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return self.alpha_bar[t].view(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self._ab(t, x0.ndim)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.config.prediction == "eps":
            return noise
        ab = self._ab(t, x0.ndim)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def _x0_from(self, x: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self._ab(t, x.ndim)
        if self.config.prediction == "eps":
            return (x - (1 - ab).sqrt() * out) / ab.sqrt()
        return ab.sqrt() * x - (1 - ab).sqrt() * out

    def _periodic_target(self, coords: torch.Tensor, x_t: torch.Tensor, pred: torch.Tensor, atoms: torch.Tensor,
                         t: torch.Tensor) -> torch.Tensor:
        """Target for the image x0 + k (k in {-1, 0, 1}) of each atom coordinate nearest the model's x0 estimate.

        Images stay within [-0.5, 1.5) so an atom is never mistaken for the null location (-1); empty slots
        keep their plain target. The eps (or v) target is the one that takes x_t to that image.
        """
        x0_hat = self._x0_from(x_t, pred, t)
        shift = torch.round(x0_hat - coords).clamp(-1, 1)
        shift = torch.where(coords < 0.5, shift.clamp(min=0), shift.clamp(max=0)) * atoms[..., None]
        image = coords + shift
        ab = self._ab(t, coords.ndim)
        eps = (x_t - ab.sqrt() * image) / (1 - ab).sqrt()
        return eps if self.config.prediction == "eps" else ab.sqrt() * eps - (1 - ab).sqrt() * image

    def _training_timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """Uniform over 0..T-1, or t = floor(T u^2) (`train_timesteps="quadratic"`: denser at low noise)."""
        if self.config.train_timesteps == "uniform":
            return torch.randint(0, self.timesteps, (batch,), device=device, generator=generator)
        u = torch.rand(batch, device=device, generator=generator)
        return (self.timesteps * u**2).long().clamp(max=self.timesteps - 1)

    def loss(self, model: nn.Module, coords: torch.Tensor, lattice: torch.Tensor, cond: Condition,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Denoising loss at timesteps drawn per `config.train_timesteps`; returns (loss, parts for logging)."""
        b = coords.shape[0]
        t = self._training_timesteps(b, coords.device, generator)
        noise_c = torch.randn(coords.shape, device=coords.device, generator=generator)
        noise_l = torch.randn(lattice.shape, device=coords.device, generator=generator)
        x_c, x_l = self.q_sample(coords, t, noise_c), self.q_sample(lattice, t, noise_l)
        extra = {}
        if _self_conditioned(model):
            extra["self_cond"] = self._first_estimate(model, x_c, x_l, t, cond, generator)
        pred_c, pred_l = model(x_c, x_l, t, cond.grid, cond.flag, **extra)
        atoms = (coords.mean(dim=-1) > self.null_value / 2).float()
        if self.config.periodic_loss:
            target_c = self._periodic_target(coords, x_c, pred_c.detach().float(), atoms, t)
        else:
            target_c = self._target(coords, noise_c, t)
        err_c = (pred_c.float() - target_c).pow(2).mean(dim=-1)
        loss_atoms = (err_c * atoms).sum() / atoms.sum().clamp(min=1)
        loss_empty = (err_c * (1 - atoms)).sum() / (1 - atoms).sum().clamp(min=1)
        if self.config.slot_loss == "slots":  # every slot counts once (atom slots times atom_loss_weight)
            weights = self.config.atom_loss_weight * atoms + (1 - atoms)
            loss_c = (err_c * weights).sum() / err_c.numel()
        else:  # atom and empty slots averaged separately: atoms weigh as much as all empty slots together
            loss_c = self.config.atom_loss_weight * loss_atoms + loss_empty
        loss_l = (pred_l.float() - self._target(lattice, noise_l, t)).pow(2).mean()
        loss = loss_c + self.config.lattice_loss_weight * loss_l
        return loss, {"loss": loss.item(), "loss_atoms": loss_atoms.item(), "loss_empty": loss_empty.item(),
                      "loss_lattice": loss_l.item()}

    def _first_estimate(self, model: nn.Module, x_c: torch.Tensor, x_l: torch.Tensor, t: torch.Tensor,
                        cond: Condition, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-conditioning's training input: on half the batches (a coin per batch, as Analog Bits) the model's
        own clean estimate from a no-gradient pass, clipped as a sampler clips it; zeros on the others, so the
        model also learns the first sampling step, where there is no previous estimate."""
        zeros = (torch.zeros_like(x_c), torch.zeros_like(x_l))
        if float(torch.rand((), device=x_c.device, generator=generator)) < 0.5:
            return zeros
        with torch.no_grad():
            out_c, out_l = model(x_c, x_l, t, cond.grid, cond.flag, self_cond=zeros)
        (low_c, high_c), (low_l, high_l) = self._clean_ranges()
        return (self._x0_from(x_c, out_c.float(), t).clamp(low_c, high_c).detach(),
                self._x0_from(x_l, out_l.float(), t).clamp(low_l, high_l).detach())

    def _clean_ranges(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Where clean coordinates and normalised cell parameters can lie; estimates are clipped to it."""
        coord_high = 1.5 if self.config.periodic_loss else 1.0  # periodic images reach up to 1.5 (read mod 1)
        return (-1.0, coord_high), (-6.0, 6.0)

    def _eps_x0(self, model: nn.Module, x_c: torch.Tensor, x_l: torch.Tensor, t: int, cond: Condition,
                guidance: float, self_cond: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noise and clipped clean estimates at step t; `self_cond`, the last step's clean estimates, reaches a
        self-conditioned model only."""
        b = x_c.shape[0]
        tt = torch.full((b,), t, device=x_c.device, dtype=torch.long)
        guided = guidance != 0 and bool(cond.flag.any())
        extra = {}
        if _self_conditioned(model):
            extra["self_cond"] = (tuple(torch.cat([s, s]) for s in self_cond) if guided and self_cond is not None
                                  else self_cond)
        if guided:
            out_c, out_l = model(torch.cat([x_c, x_c]), torch.cat([x_l, x_l]), torch.cat([tt, tt]),
                                 torch.cat([cond.grid, cond.grid]), torch.cat([cond.flag, torch.zeros_like(cond.flag)]),
                                 **extra)
            (c_c, u_c), (c_l, u_l) = out_c.float().chunk(2), out_l.float().chunk(2)
            out_c, out_l = c_c + guidance * (c_c - u_c), c_l + guidance * (c_l - u_l)
        else:
            out_c, out_l = (o.float() for o in model(x_c, x_l, tt, cond.grid, cond.flag, **extra))
        ab = self.alpha_bar[t]
        results = []
        for x, out, (low, high) in zip((x_c, x_l), (out_c, out_l), self._clean_ranges()):
            x0 = self._x0_from(x, out, tt).clamp(low, high)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # consistent with the clipped x0
            results += [eps, x0]
        return results[0], results[1], results[2], results[3]

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        shape: tuple[int, ...],
        cond: Condition,
        *,
        steps: int = 50,
        eta: float = 0.0,
        solver: str = "ddim",
        guidance: float = 0.0,
        noise_scale: float = 1.0,
        pinned: Pinned | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw coords [B, L, H, W, 3] and lattice [B, 6] with `steps` DDIM/DDPM (or DPM-Solver++ 2M) updates."""
        if solver not in SOLVERS:
            raise ValueError(f"solver {solver!r}: choose {', '.join(SOLVERS)}")
        device = cond.grid.device
        steps = max(1, min(steps, self.timesteps))
        multistep = solver.startswith("dpm++2m")
        times = self.sampling_times(steps, "quadratic" if multistep else "uniform")
        x_c = torch.randn(shape, device=device, generator=generator)
        x_l = torch.randn((shape[0], 6), device=device, generator=generator)
        previous: tuple[torch.Tensor, torch.Tensor, float] | None = None  # (x0_c, x0_l, h) of the last step
        estimate: tuple[torch.Tensor, torch.Tensor] | None = None  # the last step's clean estimate (self-conditioning)
        for i, t in enumerate(times):
            if pinned is not None:
                x_c = self._pin(x_c, pinned, t, generator)
            eps_c, x0_c, eps_l, x0_l = self._eps_x0(model, x_c, x_l, t, cond, guidance, estimate)
            estimate = (x0_c, x0_l)
            t_next = times[i + 1] if i + 1 < len(times) else -1
            ab = self.alpha_bar[t]
            ab_next = self.alpha_bar[t_next] if t_next >= 0 else torch.tensor(1.0, device=device)
            if multistep:
                # the step into the last time (t = 0, where log-SNR jumps) is first order: the 2M extrapolation
                # across a step many times longer than the one before it overshoots (DPM-Solver's lower-order final)
                last = i + 2 >= len(times)
                noise = (noise_scale * torch.randn(x_c.shape, device=device, generator=generator),
                         noise_scale * torch.randn(x_l.shape, device=device, generator=generator)
                         ) if solver == "dpm++2m-sde" and t_next >= 0 else None
                x_c, x_l, previous = self._dpm_step(x_c, x_l, x0_c, x0_l, ab, ab_next, None if last else previous,
                                                    noise)
            else:
                sigma = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp(min=0).sqrt()
                direction = (1 - ab_next - sigma**2).clamp(min=0).sqrt()
                x_c = ab_next.sqrt() * x0_c + direction * eps_c
                x_l = ab_next.sqrt() * x0_l + direction * eps_l
                if t_next >= 0 and eta > 0:
                    x_c = x_c + noise_scale * sigma * torch.randn(x_c.shape, device=device, generator=generator)
                    x_l = x_l + noise_scale * sigma * torch.randn(x_l.shape, device=device, generator=generator)
            if progress is not None:
                progress(i + 1, len(times))
        if pinned is not None:
            x_c = self._finalise(x_c, pinned)
        return x_c, x_l

    def sampling_times(self, steps: int, spacing: str = "uniform") -> list[int]:
        """The `steps` timesteps a sampler visits, from T-1 down to 0: evenly spaced, or quadratic (denser near
        the data end, where a few-step solver needs its steps; DPM-Solver's choice for short schedules)."""
        grid = torch.linspace(1, 0, steps, dtype=torch.float64)
        if spacing == "quadratic":
            grid = grid**2
        elif spacing != "uniform":
            raise ValueError(f"spacing {spacing!r}: choose uniform or quadratic")
        return (grid * (self.timesteps - 1)).round().long().unique_consecutive().tolist()

    @staticmethod
    def _dpm_step(x_c: torch.Tensor, x_l: torch.Tensor, x0_c: torch.Tensor, x0_l: torch.Tensor, ab: torch.Tensor,
                  ab_next: torch.Tensor, previous: tuple[torch.Tensor, torch.Tensor, float] | None,
                  noise: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, float] | None]:
        """One DPM-Solver++(2M) update from noise level ab to ab_next in log-SNR time lambda = log(alpha/sigma).

        The first step and the last (to ab_next = 1, where lambda is infinite) are first order, i.e. DDIM;
        the others extrapolate x0 linearly from the last two estimates. With `noise` (standard normal draws for
        coords and lattice) it is the SDE solver (k-diffusion's "midpoint" form): x is scaled by an extra e^{-h},
        the data estimate weighs 1 - e^{-2h} instead of 1 - e^{-h}, and fresh noise of std
        sigma_next sqrt(1 - e^{-2h}) keeps the marginals right."""
        if float(ab_next) >= 1.0:  # the final step lands on the data estimate itself
            return x0_c, x0_l, None
        lam, lam_next = 0.5 * torch.log(ab / (1 - ab)), 0.5 * torch.log(ab_next / (1 - ab_next))
        h = float(lam_next - lam)
        ratio = ((1 - ab_next) / (1 - ab)).sqrt()  # sigma_next / sigma
        decay = -math.expm1(-2 * h if noise is not None else -h)  # 1 - e^{-2h} (SDE) or 1 - e^{-h} (ODE)
        if noise is not None:
            ratio = ratio * math.exp(-h)
        scale = ab_next.sqrt() * decay
        d_c, d_l = x0_c, x0_l
        if previous is not None:
            prev_c, prev_l, h_prev = previous
            k = h / (2 * h_prev)  # 1 / (2 r) with r = h_prev / h
            d_c, d_l = (1 + k) * x0_c - k * prev_c, (1 + k) * x0_l - k * prev_l
        x_c, x_l = ratio * x_c + scale * d_c, ratio * x_l + scale * d_l
        if noise is not None:
            spread = (1 - ab_next).sqrt() * math.sqrt(decay)
            x_c, x_l = x_c + spread * noise[0], x_l + spread * noise[1]
        return x_c, x_l, (x0_c, x0_l, h)

    def _pin(self, x_c: torch.Tensor, pinned: Pinned, t: int, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(x_c.shape, device=x_c.device, generator=generator)
        ab = self.alpha_bar[t]
        null_noised = ab.sqrt() * pinned.null_value + (1 - ab).sqrt() * noise
        return torch.where(pinned.null_mask[..., None], null_noised, x_c)

    @staticmethod
    def _finalise(x_c: torch.Tensor, pinned: Pinned) -> torch.Tensor:
        """Exact composition: required atoms wrapped into [0, 1), every other slot null."""
        atoms = torch.remainder(x_c, 1.0).clamp(max=1.0 - 1e-6)
        exact = torch.where(pinned.atom_mask[..., None], atoms, torch.full_like(x_c, pinned.null_value))
        return torch.where(pinned.rows.view(-1, 1, 1, 1, 1), exact, x_c)
