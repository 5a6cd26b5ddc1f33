"""The UniMat denoiser: a U-Net over the periodic-table grid with factorised attention.

Features live as [B, L, H, W, C] (slot, grid row, grid column, channel). Each block
interleaves
- a residual 3x3 convolution over the (H, W) grid, shared across slots: neighbouring
  elements in the table share what they learn;
- attention along L within each element cell: the atoms of one element coordinate;
- attention across all H*W cells within each slot: elements coordinate with each other;
- a channel MLP,
all modulated (FiLM) by a global vector made of the timestep, the noisy lattice and the
composition condition. Lower levels of the U-Net downsample the grid with strided convolutions.
The lattice is denoised jointly: its prediction reads the pooled grid features.
The composition condition (atom counts per element) is concatenated to the noisy input,
as UniMat does, plus a flag channel that is 0 when the condition is dropped (classifier-free guidance).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unimat_core.lattice_encoding import LatticeEncoding
from unimat_core.model.config import DenoiserConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FiLM(nn.Module):
    """LayerNorm then per-channel scale and shift from the global vector."""

    def __init__(self, channels: int, global_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, elementwise_affine=False)
        self.to_scale_shift = nn.Linear(global_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(g).chunk(2, dim=-1)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        return self.norm(x) * (1 + scale.view(shape)) + shift.view(shape)


class GridConv(nn.Module):
    """Residual 3x3 convolutions over the (H, W) grid, applied to every slot."""

    def __init__(self, channels: int, global_dim: int, dropout: float) -> None:
        super().__init__()
        self.film = FiLM(channels, global_dim)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, l, h, w, c = x.shape
        y = F.silu(self.film(x, g))
        if h == w == 1:  # one grid cell (carbon_24's cropped grid): only the centre tap sees data
            y = _centre_tap(self.conv2, self.dropout(F.silu(_centre_tap(self.conv1, y))))
            return x + y
        y = y.reshape(b * l, h, w, c).permute(0, 3, 1, 2)
        y = self.conv2(self.dropout(F.silu(self.conv1(y))))
        return x + y.permute(0, 2, 3, 1).reshape(b, l, h, w, c)


def _centre_tap(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A padded 3x3 convolution of a 1x1 image, channels last: the centre weights as a linear map. The same
    numbers as the convolution, and 3x cheaper to train on CPU, where a 1x1-image convolution's backward pass
    took 43 % of a carbon_24 training step (benchmarks/RESULTS.md)."""
    return F.linear(x, conv.weight[:, :, 1, 1], conv.bias)


class AxisAttention(nn.Module):
    """Self-attention along one factor: the L slots of a cell, or the H*W cells of a slot."""

    def __init__(self, channels: int, heads: int, global_dim: int, over: str) -> None:
        super().__init__()
        if over not in ("slots", "grid"):
            raise ValueError(over)
        self.over = over
        self.film = FiLM(channels, global_dim)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """`bias` [B*H*W*heads, L, L] is added to the slot attention's scores (ignored across the grid)."""
        b, l, h, w, c = x.shape
        y = self.film(x, g)
        if self.over == "grid" and h * w == 1:  # attention over one cell returns that cell's value vector
            return x + self._value(y)
        if self.over == "slots":
            seq = y.permute(0, 2, 3, 1, 4).reshape(b * h * w, l, c)
        else:
            seq, bias = y.reshape(b * l, h * w, c), None
        out = self._attend(seq, bias)
        if self.over == "slots":
            out = out.reshape(b, h, w, l, c).permute(0, 3, 1, 2, 4)
        else:
            out = out.reshape(b, l, h, w, c)
        return x + out

    def _value(self, y: torch.Tensor) -> torch.Tensor:
        """Attention's output when there is one key: out_proj(v), exactly, without the attention kernel."""
        attention = self.attention
        c = y.shape[-1]
        v = F.linear(y, attention.in_proj_weight[2 * c:], attention.in_proj_bias[2 * c:])
        return F.linear(v, attention.out_proj.weight, attention.out_proj.bias)

    def _attend(self, seq: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """nn.MultiheadAttention's math on its own weights through scaled_dot_product_attention: the same
        result (to float rounding) in 1.5-2.5x less CPU time on these short sequences (benchmarks/RESULTS.md)."""
        attention = self.attention
        n, length, c = seq.shape
        heads = attention.num_heads
        qkv = F.linear(seq, attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = bias.view(n, heads, length, length) if bias is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return F.linear(out.transpose(1, 2).reshape(n, length, c), attention.out_proj.weight, attention.out_proj.bias)


def cell_matrices(encoded: torch.Tensor, encoding: LatticeEncoding) -> torch.Tensor:
    """[B, 6] normalised (noisy) cell parameters -> [B, 3, 3] row-vector cells in Angstrom, pymatgen's
    `Lattice.from_parameters` convention (as `lattice_encoding.lattice_matrices`), clamped so that a noisy
    parameter set still gives a finite cell."""
    lengths = torch.exp((encoded[:, :3] * encoding.log_length_std + encoding.log_length_mean).clamp(-3.0, 4.0))
    angles = torch.deg2rad((encoded[:, 3:] * encoding.angle_scale + encoding.angle_center).clamp(30.0, 150.0))
    a, b, c = lengths.unbind(-1)
    alpha, beta, gamma = angles.unbind(-1)
    cos_gs = ((alpha.cos() * beta.cos() - gamma.cos()) / (alpha.sin() * beta.sin())).clamp(-1 + 1e-6, 1 - 1e-6)
    sin_gs = (1 - cos_gs**2).sqrt()
    zero = torch.zeros_like(a)
    return torch.stack([torch.stack([a * beta.sin(), zero, a * beta.cos()], -1),
                        torch.stack([-b * alpha.sin() * cos_gs, b * alpha.sin() * sin_gs, b * alpha.cos()], -1),
                        torch.stack([zero, zero, c], -1)], dim=1)


class PairFeatures(nn.Module):
    """Shared hidden features of every slot pair within a grid cell: periodic Fourier features of the
    difference of their noisy fractional coordinates and, optionally, a Gaussian basis of their minimum-image
    distance in Angstrom, with the noisy lattice. Each slot-attention layer maps them to its own per-head bias
    (`PairBias`)."""

    MAX_DISTANCE = 6.0  # Angstrom: beyond the first coordination shells the basis is flat

    def __init__(self, frequencies: int, distances: int = 0, encoding: LatticeEncoding | None = None,
                 hidden: int = 32) -> None:
        super().__init__()
        self.encoding = encoding or LatticeEncoding()
        self.register_buffer("frequencies", 2 * math.pi * torch.arange(1, frequencies + 1).float(), persistent=False)
        self.register_buffer("centres", torch.linspace(0.0, self.MAX_DISTANCE, distances), persistent=False)
        shifts = torch.tensor([-1.0, 0.0, 1.0])
        self.register_buffer("images", torch.cartesian_prod(shifts, shifts, shifts), persistent=False)
        self.width = self.MAX_DISTANCE / max(distances - 1, 1)
        self.net = nn.Sequential(nn.Linear(6 * frequencies + distances + 6, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU())

    def forward(self, coords: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """coords [B, L, H, W, 3], lattice [B, 6] -> [B*H*W, L, L, hidden]."""
        b, l, h, w, _ = coords.shape
        x = coords.float().permute(0, 2, 3, 1, 4).reshape(b * h * w, l, 3)
        delta = x[:, :, None] - x[:, None, :]
        angles = (delta[..., None] * self.frequencies).flatten(-2)
        features = [angles.sin(), angles.cos()]
        if len(self.centres):
            # nearest of the 27 images around the rounded fractional difference: exact for any cell short of
            # extremely skewed ones (which Niggli reduction removes)
            cells = cell_matrices(lattice.float(), self.encoding).repeat_interleave(h * w, dim=0)
            images = (delta - delta.round())[..., None, :] + self.images  # [N, L, L, 27, 3]
            cartesian = torch.einsum("nijmk,nkl->nijml", images, cells)
            distance = (cartesian.pow(2).sum(-1).amin(-1) + 1e-12).sqrt()
            features.append(torch.exp(-(((distance[..., None] - self.centres) / self.width) ** 2)))
        cell = lattice.float().repeat_interleave(h * w, dim=0)[:, None, None].expand(-1, l, l, -1)
        return self.net(torch.cat([*features, cell], dim=-1))


class PairDisplacement(nn.Module):
    """sum_j w_ij (x_j - x_i) over the slots of each grid cell, x_j - x_i the nearest-image fractional
    difference of the noisy coordinates and w_ij from the pair features and both slots' features. Rotating or
    translating the atoms moves the output with them (up to the weights' own inputs); starts at zero."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.own, self.other = nn.Linear(channels, hidden), nn.Linear(channels, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """x [B, L, H, W, C], coords [B, L, H, W, 3], pairs [B*H*W, L, L, hidden] -> [B, L, H, W, 3]."""
        b, l, h, w, c = x.shape
        feats = x.permute(0, 2, 3, 1, 4).reshape(b * h * w, l, c)
        pos = coords.float().permute(0, 2, 3, 1, 4).reshape(b * h * w, l, 3)
        delta = pos[:, None, :] - pos[:, :, None]  # [N, i, j, 3]: x_j - x_i
        delta = delta - delta.round()
        weights = self.out(F.silu(pairs + self.own(feats)[:, :, None] + self.other(feats)[:, None, :]))
        moved = (weights * delta).sum(dim=2) / l
        return moved.reshape(b, h, w, l, 3).permute(0, 3, 1, 2, 4).to(x.dtype)


class PairMessages(nn.Module):
    """x_i += W mean_j MLP(A h_i + B h_j + pairs_ij) over the slots of each grid cell (h: the FiLM-normalised
    features): the message-passing layer of DiffCSP's CSPNet, on UniMat's slots. Starts at zero."""

    def __init__(self, channels: int, hidden: int, global_dim: int) -> None:
        super().__init__()
        self.film = FiLM(channels, global_dim)
        self.own, self.other = nn.Linear(channels, hidden), nn.Linear(channels, hidden, bias=False)
        self.pair = nn.Linear(hidden, hidden, bias=False)
        self.message = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """x [B, L, H, W, C], pairs [B*H*W, L, L, hidden] -> x with the averaged messages added."""
        b, l, h, w, c = x.shape
        feats = self.film(x, g).permute(0, 2, 3, 1, 4).reshape(b * h * w, l, c)
        hidden = F.silu(self.pair(pairs.to(x.dtype)) + self.own(feats)[:, :, None] + self.other(feats)[:, None, :])
        update = self.out(F.silu(self.message(hidden)).mean(dim=2))
        return x + update.reshape(b, h, w, l, c).permute(0, 3, 1, 2, 4)


class PairBias(nn.Module):
    """One slot-attention layer's per-head score bias from the shared pair features; starts at zero."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.out = nn.Linear(hidden, heads)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """[N, L, L, hidden] -> [N*heads, L, L], the layout nn.MultiheadAttention's attn_mask takes."""
        n, l = pairs.shape[:2]
        return self.out(pairs).permute(0, 3, 1, 2).reshape(n * self.heads, l, l)


class ChannelMLP(nn.Module):
    def __init__(self, channels: int, global_dim: int, dropout: float) -> None:
        super().__init__()
        self.film = FiLM(channels, global_dim)
        self.net = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * channels, channels))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x + self.net(self.film(x, g))


PAIR_HIDDEN = 32


class UniMatBlock(nn.Module):
    def __init__(self, channels: int, config: DenoiserConfig, slots: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [GridConv(channels, config.time_dim, config.dropout)]
        self.pair_bias = None
        self.messages = None
        if config.slot_attention and slots > 1:
            layers.append(AxisAttention(channels, config.heads, config.time_dim, "slots"))
            if config.uses_pairs:
                self.pair_bias = PairBias(PAIR_HIDDEN, config.heads)
        if config.pair_messages and slots > 1:
            self.messages = PairMessages(channels, PAIR_HIDDEN, config.time_dim)
        if config.grid_attention:
            layers.append(AxisAttention(channels, config.heads, config.time_dim, "grid"))
        layers.append(ChannelMLP(channels, config.time_dim, config.dropout))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, g: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """`pairs`: the shared pair features at this block's grid resolution, or None (no pair bias)."""
        bias = self.pair_bias(pairs).to(x.dtype) if self.pair_bias is not None and pairs is not None else None
        for layer in self.layers:
            x = layer(x, g, bias) if isinstance(layer, AxisAttention) else layer(x, g)
            if self.messages is not None and pairs is not None and isinstance(layer, GridConv):
                x = self.messages(x, g, pairs)
        return x


class Resample(nn.Module):
    """Strided 3x3 conv (down) or nearest upsampling to a target size + 3x3 conv (up), per slot."""

    def __init__(self, c_in: int, c_out: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2 if down else 1, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        b, l, h, w, c = x.shape
        y = x.reshape(b * l, h, w, c).permute(0, 3, 1, 2)
        if not self.down:
            y = F.interpolate(y, size=size, mode="nearest")
        y = self.conv(y)
        return y.permute(0, 2, 3, 1).reshape(b, l, y.shape[2], y.shape[3], y.shape[1])


class UniMatDenoiser(nn.Module):
    """Predicts the noise (or v) of coords [B, L, H, W, 3] and lattice [B, 6] at timestep t.

    `cond` is the composition grid [B, H, W] (atom counts divided by L) and `cond_flag` [B]
    is 1 where the condition applies, 0 for unconditional samples.
    """

    def __init__(self, config: DenoiserConfig, slots: int, height: int, width: int,
                 lattice_encoding: LatticeEncoding | None = None) -> None:
        """`lattice_encoding` (the spec's) turns the noisy cell into Angstrom for `pair_distances`."""
        super().__init__()
        self.config = config
        self.slots, self.height, self.width = slots, height, width
        c0 = config.width
        coordinate_inputs = config.coordinate_features * (2 if config.self_condition else 1)
        self.input = nn.Linear(coordinate_inputs + 2, c0)
        self.cell_embedding = nn.Parameter(torch.randn(height, width, c0) * 0.02)
        if config.slot_embedding:
            self.slot_embedding = nn.Parameter(torch.randn(slots, 1, 1, c0) * 0.02)
        if config.coord_fourier:
            self.register_buffer("frequencies", 2 * math.pi * torch.arange(1, config.coord_fourier + 1).float(),
                                 persistent=False)
        paired = config.uses_pairs and slots > 1
        self.pair_features = PairFeatures(config.pair_bias, config.pair_distances, lattice_encoding,
                                          PAIR_HIDDEN) if paired else None
        g = config.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(g, g), nn.SiLU(), nn.Linear(g, g))
        self.lattice_mlp = nn.Sequential(nn.Linear(12 if config.self_condition else 6, g), nn.SiLU(), nn.Linear(g, g))
        self.cond_mlp = nn.Sequential(nn.Linear(height * width + 1, g), nn.SiLU(), nn.Linear(g, g))

        widths = [c0 * m for m in config.channel_mults]
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for level, c in enumerate(widths):
            c_prev = widths[level - 1] if level else c0
            self.downsamples.append(Resample(c_prev, c, down=True) if level else nn.Identity())
            self.down_blocks.append(nn.ModuleList(UniMatBlock(c, config, slots) for _ in range(config.blocks_per_level)))
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        self.skip_merges = nn.ModuleList()
        for level in reversed(range(len(widths) - 1)):
            c, c_low = widths[level], widths[level + 1]
            self.upsamples.append(Resample(c_low, c, down=False))
            self.skip_merges.append(nn.Linear(2 * c, c))
            self.up_blocks.append(nn.ModuleList(UniMatBlock(c, config, slots) for _ in range(config.blocks_per_level)))

        self.out_norm = nn.LayerNorm(c0)
        self.coord_head = nn.Linear(c0, 3)
        self.displacement = PairDisplacement(c0, PAIR_HIDDEN) if config.pair_displacement and paired else None
        self.lattice_head = nn.Sequential(nn.Linear(c0 + g, g), nn.SiLU(), nn.Linear(g, 6))

    def _coordinate_features(self, coords: torch.Tensor) -> torch.Tensor:
        """The noisy coordinates, plus their periodic Fourier features when configured."""
        if not self.config.coord_fourier:
            return coords
        angles = (coords[..., None] * self.frequencies).flatten(-2)
        return torch.cat([coords, angles.sin(), angles.cos()], dim=-1)

    def forward(self, coords: torch.Tensor, lattice: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                cond_flag: torch.Tensor, self_cond: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """`self_cond`: the previous clean estimate (coords, lattice) for a self-conditioned model (zeros when
        None); a model without self-conditioning ignores it."""
        b, l, h, w, _ = coords.shape
        flag = cond_flag.float()
        cond_in = (cond * flag[:, None, None]).to(coords.dtype)
        cond_channels = torch.stack(
            [cond_in[:, None].expand(b, l, h, w), flag[:, None, None, None].expand(b, l, h, w).to(coords.dtype)], dim=-1
        )
        coordinate_features = [self._coordinate_features(coords)]
        lattice_in = lattice
        if self.config.self_condition:
            previous_c, previous_l = self_cond if self_cond is not None else (torch.zeros_like(coords),
                                                                              torch.zeros_like(lattice))
            coordinate_features.append(self._coordinate_features(previous_c.to(coords.dtype)))
            lattice_in = torch.cat([lattice, previous_l.to(lattice.dtype)], dim=-1)
        x = self.input(torch.cat([*coordinate_features, cond_channels], dim=-1)) + self.cell_embedding
        if self.config.slot_embedding:
            x = x + self.slot_embedding

        g = self.time_mlp(timestep_embedding(t, self.config.time_dim))
        g = g + self.lattice_mlp(lattice_in) + self.cond_mlp(torch.cat([cond_in.reshape(b, -1), flag[:, None]], dim=-1))
        g = F.silu(g)

        # pair features belong to the input's grid cells: the blocks at that resolution use them, the
        # downsampled levels (whose cells merge several elements) do without
        pairs = self.pair_features(coords, lattice) if self.pair_features is not None else None
        skips = []
        for level, (downsample, blocks) in enumerate(zip(self.downsamples, self.down_blocks)):
            x = downsample(x)
            for block in blocks:
                x = block(x, g, pairs if level == 0 else None)
            skips.append(x)
        skips.pop()
        for level, upsample, merge, blocks in zip(reversed(range(len(self.up_blocks))), self.upsamples, self.skip_merges,
                                                  self.up_blocks):
            skip = skips.pop()
            x = merge(torch.cat([upsample(x, size=skip.shape[2:4]), skip], dim=-1))
            for block in blocks:
                x = block(x, g, pairs if level == 0 else None)

        x = self.out_norm(x)
        pooled = x.mean(dim=(1, 2, 3))
        out_c = self.coord_head(x)
        if self.displacement is not None:
            out_c = out_c + self.displacement(x, coords, pairs)
        return out_c, self.lattice_head(torch.cat([pooled, g], dim=-1))
