"""A learned composition prior: which elements, and how many atoms of each, a crystal of the data has.

Why: deciding jointly which of the L x H x W slots hold atoms is what a small UniMat model learns
slowest (unconditional samples of a 30-minute perov_5 model had the data's element-count pattern
13-16 % of the time), while the same model places atoms well once the composition is given. So
unconditional generation samples a composition from this prior first, then the structure with
conditional UniMat (the empty slots pinned). The prior is a model, not a lookup table of training
compositions: it can propose compositions that the data does not hold.

The model reads a cell's composition as tokens, one per element in periodic-table order,
each token an (element, count) pair, then an end token; a small GRU predicts the next token.
Sampling masks every token that would break the order (each element at most once, in table order)
or the grid (elements off the model's grid), so every sample is a composition the UniMat model can
represent.

The number of atoms in the cell is drawn first, from the training data's histogram (as CDVAE and DiffCSP
sample N), and the tokens are then masked to add up to it. Why: the GRU alone put 3.2 % of perov_5 samples in
cells of 3, 4, 6 or 7 atoms, a count no perov_5 crystal has, and those samples made 43 % of the invalid
structures and a fifth of the COV-P misses (benchmarks/RESULTS.md, "Atoms per cell and steps").
Checkpoints from before the histogram sample without it.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import ConfigDict
from torch import nn
from torch.nn import functional as F

from unimat_core.representation import UniMatSpec
from unimat_core.settings import Config

END = 0  # token ids: 0 = end, 1 + cell * L + (count - 1) = `count` atoms of the element in grid cell `cell`


class PriorConfig(Config):
    model_config = ConfigDict(frozen=True)

    embed: int = 64
    hidden: int = 128
    dropout: float = 0.1
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1  # held out for early stopping (keeps the prior from memorising the training list)
    seed: int = 0


class CompositionPrior(nn.Module):
    """Autoregressive model over (element, count) tokens of one cell; `spec` fixes the vocabulary."""

    def __init__(self, spec: UniMatSpec, config: PriorConfig | None = None) -> None:
        super().__init__()
        self.config = config or PriorConfig()
        self.slots = spec.max_atoms_per_element
        self.cells = spec.grid.height * spec.grid.width
        self.vocab = 1 + self.cells * self.slots
        on_grid = torch.from_numpy(spec.grid.element_mask().reshape(-1)).repeat_interleave(self.slots)
        self.register_buffer("on_grid", torch.cat([torch.ones(1, dtype=torch.bool), on_grid]), persistent=False)
        c = self.config
        self.embedding = nn.Embedding(self.vocab + 1, c.embed)  # + a start token
        self.gru = nn.GRU(c.embed, c.hidden, batch_first=True)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, self.vocab)
        # how many training cells have N atoms, index N (None: a checkpoint from before it; N is not drawn)
        self.atom_counts: np.ndarray | None = None
        token = torch.arange(self.vocab)
        self.register_buffer("token_atoms", torch.where(token == END, 0, (token - 1) % self.slots + 1), persistent=False)
        cell_on_grid = torch.from_numpy(spec.grid.element_mask().reshape(-1)).long()
        # atoms the cells after each cell can still hold (an element's count is at most L), per token
        room_after = self.slots * (cell_on_grid.flip(0).cumsum(0).flip(0) - cell_on_grid)
        self.register_buffer("room_after", torch.cat([torch.zeros(1, dtype=torch.long),
                                                      room_after.repeat_interleave(self.slots)]), persistent=False)

    @property
    def start(self) -> int:
        return self.vocab

    def tokens(self, counts: np.ndarray) -> list[list[int]]:
        """Token sequences (end token included) of composition grids [N, H, W] of integer counts."""
        flat = counts.reshape(counts.shape[0], -1)
        sequences = []
        for row in flat:
            cells = np.nonzero(row)[0]
            sequences.append([1 + int(cell) * self.slots + int(row[cell]) - 1 for cell in cells] + [END])
        return sequences

    def counts(self, sequence: list[int], grid_shape: tuple[int, int]) -> np.ndarray:
        grid = np.zeros(self.cells, dtype=np.int64)
        for token in sequence:
            if token == END:
                break
            cell, count = divmod(token - 1, self.slots)
            grid[cell] = count + 1
        return grid.reshape(grid_shape)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(self.dropout(self.embedding(inputs)))
        return self.head(self.dropout(hidden))

    def _allowed(self, last_cell: torch.Tensor) -> torch.Tensor:
        """[B, vocab] mask: tokens of cells after the last chosen one, on the grid; end only after an element."""
        token_cells = torch.arange(self.vocab, device=last_cell.device)
        token_cells = torch.where(token_cells == END, torch.full_like(token_cells, -1), (token_cells - 1) // self.slots)
        allowed = (token_cells[None] > last_cell[:, None]) & self.on_grid[None]
        allowed[:, END] = last_cell >= 0
        return allowed

    def _adds_up(self, remaining: torch.Tensor) -> torch.Tensor:
        """[B, vocab] mask: tokens after which the cell can still hold exactly `remaining` atoms; end at 0 left."""
        left = remaining[:, None] - self.token_atoms[None]
        fits = (left >= 0) & (left <= self.room_after[None])
        fits[:, END] = remaining == 0
        return fits

    def draw_atom_counts(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Atoms per cell of `n` samples from the training histogram (None without one)."""
        if self.atom_counts is None:
            return None
        weights = torch.as_tensor(self.atom_counts, dtype=torch.float64)
        return torch.multinomial(weights, n, replacement=True, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> list[list[int]]:
        """`n` token sequences drawn from the model (each ends with the end token), each adding up to an atom count
        drawn from the training histogram when the prior has one."""
        device = self.head.weight.device
        self.eval()
        remaining = self.draw_atom_counts(n, generator)
        remaining = remaining.to(device) if remaining is not None else None
        token = torch.full((n, 1), self.start, device=device, dtype=torch.long)
        last_cell = torch.full((n,), -1, device=device, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        state = None
        sequences: list[list[int]] = [[] for _ in range(n)]
        for _ in range(self.cells + 1):
            hidden, state = self.gru(self.embedding(token), state)
            logits = self.head(hidden[:, -1]) / temperature
            allowed = self._allowed(last_cell)
            if remaining is not None:
                allowed &= self._adds_up(remaining)
            logits = logits.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            chosen = torch.multinomial(probs, 1, generator=generator).to(device).squeeze(1)
            for i in torch.nonzero(~done).flatten().tolist():
                sequences[i].append(int(chosen[i]))
            done |= chosen == END
            if bool(done.all()):
                break
            last_cell = torch.where(chosen == END, last_cell, (chosen - 1) // self.slots)
            if remaining is not None:
                remaining = remaining - self.token_atoms[chosen]
            token = chosen[:, None]
        return sequences

    def nll(self, sequences: list[list[int]]) -> torch.Tensor:
        """Mean negative log-likelihood per token of a batch of sequences."""
        device = self.head.weight.device
        length = max(len(s) for s in sequences)
        targets = torch.full((len(sequences), length), -100, dtype=torch.long, device=device)
        inputs = torch.full((len(sequences), length), self.start, dtype=torch.long, device=device)
        for i, seq in enumerate(sequences):
            targets[i, : len(seq)] = torch.tensor(seq, device=device)
            inputs[i, 1 : len(seq)] = torch.tensor(seq[:-1], device=device)
        logits = self(inputs)
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1), ignore_index=-100)


def fit_prior(counts: np.ndarray, spec: UniMatSpec, config: PriorConfig | None = None) -> tuple[CompositionPrior, dict]:
    """Train a prior on composition grids [N, H, W]; keeps the epoch with the lowest held-out NLL."""
    config = config or PriorConfig()
    torch.manual_seed(config.seed)
    prior = CompositionPrior(spec, config)
    sequences = prior.tokens(counts)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(sequences))
    n_val = int(round(config.val_fraction * len(sequences))) if len(sequences) >= 20 else 0
    val = [sequences[i] for i in order[:n_val]]
    train = [sequences[i] for i in order[n_val:]]
    optimizer = torch.optim.AdamW(prior.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    best = (float("inf"), None, 0)
    for epoch in range(config.epochs):
        prior.train()
        shuffled = rng.permutation(len(train))
        for start in range(0, len(train), config.batch_size):
            batch = [train[i] for i in shuffled[start : start + config.batch_size]]
            loss = prior.nll(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        prior.eval()
        with torch.no_grad():
            score = float(prior.nll(val or train))
        if score < best[0]:
            best = (score, {k: v.clone() for k, v in prior.state_dict().items()}, epoch + 1)
    prior.load_state_dict(best[1])
    prior.atom_counts = np.bincount(counts.reshape(len(counts), -1).sum(axis=1))
    prior.eval()
    return prior, {"prior_nll": best[0], "prior_epochs": best[2], "prior_train": len(train), "prior_val": len(val)}
