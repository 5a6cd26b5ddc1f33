import numpy as np
import torch
from pymatgen.core import Composition

from unimat_core.model.composition_prior import END, CompositionPrior, PriorConfig, fit_prior
from unimat_core.model.generation import formula_of
from unimat_core.representation import UniMatSpec, composition_grid, encode
from unimat_core.structure_table import structures_of


def _counts(frame, spec):
    return composition_grid(encode(structures_of(frame), spec).coords, spec).astype(np.int64)


def test_tokens_round_trip_to_the_same_composition_grid(bundled_tables):
    frame = bundled_tables["perov_5"].head(20)
    spec = UniMatSpec.fit(structures_of(frame), crop_grid=True)
    counts = _counts(frame, spec)
    prior = CompositionPrior(spec)
    for grid, sequence in zip(counts, prior.tokens(counts)):
        assert sequence[-1] == END and len(sequence) == int((grid > 0).sum()) + 1
        assert (prior.counts(sequence, spec.grid.shape) == grid).all()


def test_an_untrained_prior_still_samples_only_representable_compositions(bundled_tables):
    """Masking, not training, guarantees each element once, in table order, on the grid, at most L atoms."""
    frame = bundled_tables["perov_5"].head(50)
    spec = UniMatSpec.fit(structures_of(frame), crop_grid=True)
    prior = CompositionPrior(spec)
    for sequence in prior.sample(200, generator=torch.Generator().manual_seed(0)):
        assert sequence[-1] == END and END not in sequence[:-1] and len(sequence) >= 2
        cells = [(t - 1) // spec.max_atoms_per_element for t in sequence[:-1]]
        assert cells == sorted(set(cells))
        grid = prior.counts(sequence, spec.grid.shape)
        assert (grid <= spec.max_atoms_per_element).all() and spec.grid.element_mask()[grid > 0].all()


def test_a_fitted_prior_learns_the_perovskite_pattern_and_proposes_new_compositions(bundled_tables):
    frame = bundled_tables["perov_5"]
    frame = frame[frame["split"] == "val"].head(1500)
    spec = UniMatSpec.fit(structures_of(frame), crop_grid=True)
    counts = _counts(frame, spec)
    prior, stats = fit_prior(counts, spec, PriorConfig(epochs=25))
    assert stats["prior_val"] == 150 and 1 <= stats["prior_epochs"] <= 25
    sequences = prior.sample(400, generator=torch.Generator().manual_seed(1))
    formulas = [formula_of(prior.counts(s, spec.grid.shape), spec) for s in sequences]
    anions = {"N", "O", "F", "S"}
    pattern = [Composition(f).num_atoms == 5 and sum(a for e, a in Composition(f).items() if e.symbol in anions) == 3
               for f in formulas]
    assert np.mean(pattern) > 0.8  # the data's ABX3 pattern (an untrained prior: ~0 %)
    seen = {Composition(f).reduced_formula for f in frame["formula"]}
    assert sum(Composition(f).reduced_formula not in seen for f in formulas) >= 40  # a model, not a lookup table


def test_samples_add_up_to_an_atom_count_drawn_from_the_training_histogram(bundled_tables):
    """Even an untrained prior, given the histogram, proposes only cells of the data's sizes, in its proportions;
    without one (checkpoints from before it) the sizes are the GRU's alone."""
    frame = bundled_tables["carbon_24"]
    frame = frame[frame["split"] == "val"]
    spec = UniMatSpec.fit(structures_of(frame.head(300)), crop_grid=True)
    prior = CompositionPrior(spec)
    assert prior.draw_atom_counts(3) is None
    prior.atom_counts = np.bincount([6, 6, 6, 12])
    sizes = [int(prior.counts(s, spec.grid.shape).sum()) for s in prior.sample(400, torch.Generator().manual_seed(0))]
    assert set(sizes) == {6, 12} and 0.65 < sizes.count(6) / 400 < 0.85

    perov = bundled_tables["perov_5"].head(200)
    spec = UniMatSpec.fit(structures_of(perov), crop_grid=True)
    fitted, _ = fit_prior(_counts(perov, spec), spec, PriorConfig(epochs=2))
    assert fitted.atom_counts.tolist() == [0, 0, 0, 0, 0, 200]
    for sequence in fitted.sample(300, torch.Generator().manual_seed(2)):
        grid = fitted.counts(sequence, spec.grid.shape)
        assert grid.sum() == 5 and (grid <= spec.max_atoms_per_element).all() and spec.grid.element_mask()[grid > 0].all()
