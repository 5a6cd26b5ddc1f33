"""Rounds of a campaign: which round to run, its seed, and what it looks for (no Prefect).

A campaign run in rounds proposes new candidates every round: the round's sampling seed derives from
(the campaign's seed, the round number), so rounds differ and a resumed round reproduces itself, and its
targets follow a stated policy (`TargetPolicy`):

- user targets: cell formulas ("SrTiO3") or chemical systems ("Sr-Ti-O", whose known compositions are
  taken from the dataset and earlier finds);
- exploration: unconditional samples (the caller draws their compositions from the model's prior);
- exploitation: compositions near the lowest-energy finds of earlier rounds (the find's own composition,
  for a better polymorph, and the compositions one same-group substitution away: Ti -> Zr, O -> S, ...).

Shares are fractions of the round's samples; a share with nothing to draw from (exploitation in round 1,
user targets when there are none) goes to the user targets, else to exploration.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from pymatgen.core import Composition, Element

from unimat_core.errors import UserInputError

_ROUND = re.compile(r"^(next|[1-9][0-9]{0,3})$")


def parse_round(value: str) -> str:
    """'next' or a round number 1..9999 (as text); anything else is a clear error."""
    text = str(value).strip().lower()
    if not _ROUND.match(text):
        raise ValueError(f"{value!r} is not a round: give 'next' or a round number (1, 2, ...)")
    return text


def resolve_round(asked: str, existing: Sequence[int]) -> int:
    """The round to run: 'next' is one past the last existing round; a number must exist or be the next one."""
    last = max(existing, default=0)
    if asked == "next":
        return last + 1
    number = int(asked)
    if number > last + 1:
        raise UserInputError(f"--round {number}: the campaign has rounds up to {last}; start the next one with "
                             f"--round next (or --round {last + 1})")
    return number


def round_seed(campaign_seed: int, number: int) -> int:
    """Sampling seed of round `number`: differs per round, the same on every rerun of that round."""
    return int.from_bytes(hashlib.sha256(f"{campaign_seed}:{number}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def check_target(target: str) -> str:
    """A formula or an element-dash chemical system of known elements (as typed); else ValueError."""
    try:
        elements = target.split("-") if "-" in target else list(Composition(target).as_dict())
        for symbol in elements:
            Element(symbol)
    except Exception as exc:  # noqa: BLE001 - pymatgen raises several kinds
        raise ValueError(f"{target!r} is neither a formula (SrTiO3) nor a chemical system (Sr-Ti-O)") from exc
    return target


def chemical_system(formula: str) -> frozenset[str]:
    return frozenset(str(e) for e in Composition(formula).elements)


def cell_formula(formula: str) -> str:
    """'Sr1Ti1O3' style: integer counts of one cell, elements in electronegativity order."""
    composition = Composition(formula)
    return "".join(f"{el}{int(round(n))}" for el, n in sorted(composition.items(), key=lambda kv: kv[0].X))


def substitutions(formula: str) -> list[str]:
    """Compositions one same-group substitution away from `formula` (the row above or below), in element order."""
    composition = Composition(formula)
    out = []
    for element in sorted(composition.elements, key=lambda e: e.Z):
        for other in _group_neighbours(element):
            if other in composition:
                continue
            swapped = {str(other if e == element else e): n for e, n in composition.items()}
            out.append(cell_formula(Composition(swapped).formula))
    return out


def _group_neighbours(element: Element) -> list[Element]:
    out = []
    for candidate in (el for el in Element if el.Z <= 103):
        if candidate.group == element.group and abs(candidate.row - element.row) == 1 and not candidate.is_noble_gas \
                and candidate.block == element.block:
            out.append(candidate)
    return out


@dataclass(frozen=True)
class TargetPolicy:
    """What a round samples; `explore` + `exploit` <= 1, the user targets get the rest."""

    samples: int = 32
    targets: tuple[str, ...] = ()
    explore: float = 0.25
    exploit: float = 0.25
    exploit_top: int = 4

    def shares(self, has_user: bool, has_finds: bool) -> dict[str, int]:
        """Samples per kind; an empty kind's share goes to the user targets, else to exploration."""
        exploit = round(self.samples * self.exploit) if has_finds else 0
        explore = round(self.samples * self.explore)
        user = self.samples - exploit - explore
        if not has_user:
            explore, user = explore + user, 0
        return {"user": user, "explore": explore, "exploit": exploit}


@dataclass
class RoundPlan:
    """A round's targets (one entry per sample: a cell formula, or None for an exploration sample whose
    composition the caller draws from the model's prior) and where each came from."""

    round: int
    seed: int
    shares: dict[str, int]
    targets: list[str | None] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # compositions the model cannot sample, with why

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RoundPlan:
        return cls(**data)


def _fill(pool: list[str], n: int) -> list[str]:
    """`n` entries taken round-robin from `pool` (each composition sampled about equally often)."""
    return [pool[i % len(pool)] for i in range(n)] if pool and n > 0 else []


def user_compositions(targets: Sequence[str], known_formulas: Sequence[str], fits: Callable[[str], str | None]
                      ) -> list[str]:
    """Cell formulas of the user targets: a formula as given; a chemical system as the known compositions inside
    it (or one atom of each element when none is known). A target the model cannot sample is a UserInputError."""
    out: list[str] = []
    for target in targets:
        if "-" in target:
            system = frozenset(target.split("-"))
            inside = sorted({cell_formula(f) for f in known_formulas if f and chemical_system(f) == system})
            found = [f for f in inside if fits(f) is None] or [cell_formula("".join(system))]
        else:
            found = [target]
        for formula in found:
            why = fits(formula)
            if why:
                raise UserInputError(f"--round-targets: {target!r}: {why}")
        out.extend(found)
    return out


def exploit_compositions(finds: Sequence[tuple[str, float]], top: int, fits: Callable[[str], str | None],
                         skipped: list[str]) -> list[str]:
    """Compositions near the `top` lowest-energy finds ((formula, e_above_hull) pairs): each find's own
    composition first, then its substitutions, interleaved across finds; those the model cannot sample are
    left out (listed in `skipped`)."""
    best: list[str] = []
    for formula, _ in sorted(finds, key=lambda f: f[1]):
        cell = cell_formula(formula)
        if cell not in best:
            best.append(cell)
        if len(best) == top:
            break
    lists = [[f, *substitutions(f)] for f in best]
    out: list[str] = []
    for depth in range(max((len(x) for x in lists), default=0)):
        for options in lists:
            if depth < len(options) and options[depth] not in out:
                why = fits(options[depth])
                if why is None:
                    out.append(options[depth])
                elif depth:  # a find's own composition always fits; a substitution may not
                    skipped.append(f"{options[depth]}: {why}")
    return out


def plan_round(policy: TargetPolicy, number: int, seed: int, *, finds: Sequence[tuple[str, float]],
               known_formulas: Sequence[str], fits: Callable[[str], str | None]) -> RoundPlan:
    """The round's targets under `policy`; `finds` are earlier rounds' converged finds (formula, e_above_hull),
    `fits(formula)` says why the model cannot sample a composition (None when it can)."""
    user = user_compositions(policy.targets, known_formulas, fits)
    skipped: list[str] = []
    near = exploit_compositions(finds, policy.exploit_top, fits, skipped)
    shares = policy.shares(bool(user), bool(near))
    rng = np.random.default_rng(seed)
    user = [user[i] for i in rng.permutation(len(user))]
    targets: list[str | None] = [*_fill(user, shares["user"]), *_fill(near, shares["exploit"]),
                                 *([None] * shares["explore"])]
    kinds = ["user"] * shares["user"] + ["exploit"] * shares["exploit"] + ["explore"] * shares["explore"]
    return RoundPlan(number, seed, shares, targets, kinds, skipped)
