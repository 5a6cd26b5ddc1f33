import numpy as np
import pytest

from unimat_core.metrics.csp import CSPConfig, choose_targets, evaluate_csp, match_predictions, summarise
from unimat_core.model.checkpoint import load_model
from unimat_core.structure_table import structure_from_json, structure_to_json


def _perturbed(text: str, scale: float, seed: int) -> str:
    structure = structure_from_json(text).copy()
    structure.perturb(scale, min_distance=scale / 2) if seed else None
    return structure_to_json(structure)


def test_match_rate_and_rmse_by_hand(bundled_tables):
    frame = bundled_tables["perov_5"].head(3)
    refs = list(frame["structure"])
    samples = [
        [refs[0]],                               # identical: matched, rms 0
        [None, _perturbed(refs[1], 0.1, 1)],     # a failed decode, then a slightly moved copy: matched, rms > 0
        [refs[0] if frame["formula"].iloc[0] != frame["formula"].iloc[2] else None],  # another crystal: a miss
    ]
    per_target = match_predictions(refs, samples)
    assert per_target["matched"].tolist() == [True, True, False]
    assert per_target["rms"].iloc[0] == pytest.approx(0, abs=1e-6) and 0 < per_target["rms"].iloc[1] < 0.2
    assert np.isnan(per_target["rms"].iloc[2])
    summary = summarise(per_target, k=2)
    assert summary["match_rate"] == pytest.approx(2 / 3)
    assert summary["rmse"] == pytest.approx(per_target["rms"].iloc[:2].mean())


def test_targets_are_a_seeded_subset_and_config_is_checked(bundled_tables):
    frame = bundled_tables["perov_5"].head(40)
    a, b = choose_targets(frame, 10, seed=3), choose_targets(frame, 10, seed=3)
    assert a["id"].tolist() == b["id"].tolist() and len(a) == 10
    assert len(choose_targets(frame, None, 0)) == 40
    with pytest.raises(ValueError, match="k must be >= 1"):
        CSPConfig(k=0)


def test_an_overfit_model_predicts_its_training_crystals(overfit_model):
    """CSP end to end on a real (tiny, memorising) model: every one of its four crystals is found."""
    frame, summary = overfit_model
    loaded = load_model(summary.checkpoint)
    per_target, result = evaluate_csp(loaded, frame, CSPConfig(k=2, steps=50, guidance=0.0))
    assert result["n_targets"] == 4 and result["k"] == 2
    assert (result["guidance"], result["steps"], result["noise_scale"]) == (0.0, 50, 1.0)
    assert result["match_rate"] == 1.0 and result["rmse"] < 0.1
    assert per_target["id"].tolist() == frame["id"].tolist()


def test_report_names_the_published_anchors():
    from unimat_core.metrics.csp import markdown

    text = markdown({"k": 1, "n_targets": 100, "match_rate": 0.4, "rmse": 0.3}, "perov_5")
    assert "| this model | 40.00 % | 0.3000 |" in text and "| DiffCSP (published) | 52.02 % | 0.076 |" in text
    assert "| this model (20 steps, guidance 0) | 40.00 % |" in markdown(
        {"k": 1, "n_targets": 100, "match_rate": 0.4, "rmse": 0.3, "guidance": 0.0, "steps": 20, "noise_scale": 1.0})
    assert "| this model (20 steps, guidance 0, noise scale 0.4) | 40.00 % |" in markdown(
        {"k": 1, "n_targets": 100, "match_rate": 0.4, "rmse": 0.3, "guidance": 0.0, "steps": 20, "noise_scale": 0.4})
