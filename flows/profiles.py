"""Named campaign profiles: the few stage settings a kind of campaign sets otherwise than the stage defaults.

Every default is declared once, in its stage's config (`flows.params`, `unimat_core.model.config`,
`dft.relax`); a profile lists only what it overrides, by parameter group and field name, so an override reads
as one. `check_profiles` validates each profile against those configs (a renamed field, a value out of bounds or
an "override" equal to the default fails); flows.params runs it at import and tests/flows/test_profiles.py
asserts it. `unimat campaign --profile demo` (the default, what `make demo` runs) applies `demo`;
`--profile stages` runs every stage with its declared defaults. Options given on the command line win over both.
"""

from __future__ import annotations

from typing import Literal

# 8 perov_5 test-split compositions not in its val split (seeded draw), for the demo's conditional sampling
DEMO_COMPOSITIONS = ("GaPdO2F", "NiPtO3", "MgMnN3", "AsPtNO2", "ScInN3", "NbCoO3", "TaCoO3", "VSiO3")

Profile = Literal["demo", "stages"]
DEFAULT_PROFILE: Profile = "demo"

PROFILES: dict[str, dict[str, dict[str, object]]] = {
    # `make demo` (2 CPU cores, under 20 minutes in total; per-stage times in benchmarks/RESULTS.md, "Campaign"):
    # the shipped perov_5 model (`pretrained:perov_5`, see its MODEL_CARD.md) fine-tuned for 800 steps (~2 minutes
    # here; a step count, not a time budget, so that the demo gives the same crystals on every run of a machine) at
    # a small learning rate on the campaign's data (flows.params.CampaignParams.shipped_model), then asked for 4
    # structures (the declared samples_per_composition) of each of 8 compositions of the perov_5 test split absent
    # from its training (val) split (DEMO_COMPOSITIONS, 32 samples); CHGNet + BFGS relaxations capped at 150 steps / 20 s each (BFGS needs
    # about half FIRE's steps on these small cells), 4 per chunk; metrics against a seeded 1,000 of the 3,785
    # test structures (the reference fingerprints dominate the evaluate stage), coverage on the evaluated subset.
    "demo": {
        "train": {"max_steps": 800, "batch_size": 32, "learning_rate": 2e-4},
        "generate": {"compositions": DEMO_COMPOSITIONS, "batch_size": 32},
        "relax": {"optimizer": "BFGS", "time_limit_s": 20.0, "max_steps": 150, "chunk_size": 4},
        "evaluate": {"coverage_on": "subset", "reference_limit": 1000},
    },
    # every stage with its declared defaults (unconditional sampling, the full reference split, ...)
    "stages": {},
}


def overrides(profile: str, group: str) -> dict[str, object]:
    """What `profile` sets in the parameter group `group` (empty: the group's declared defaults)."""
    return dict(PROFILES[profile].get(group, {}))


def check_profiles(models: dict[str, type]) -> None:
    """Every profile names real fields of `models` (group -> parameter model), with valid values that differ
    from the declared defaults (an override equal to its default would be a second declaration of it)."""
    from unimat_core.settings import exposed_fields

    for name, groups in PROFILES.items():
        for group, values in groups.items():
            if group not in models:
                raise ValueError(f"profile {name!r}: no parameter group {group!r} (groups: {sorted(models)})")
            model = models[group]
            fields = {**model.model_fields, **{f: info for f, (_, info) in exposed_fields(model).items()}}
            for field, value in values.items():
                if field not in fields:
                    raise ValueError(f"profile {name!r}: {group} has no field {field!r}")
                if value == fields[field].get_default(call_default_factory=True):
                    raise ValueError(f"profile {name!r}: {group}.{field} = {value!r} is the declared default; "
                                     "leave it out")
            model(**values)  # bounds and validators
