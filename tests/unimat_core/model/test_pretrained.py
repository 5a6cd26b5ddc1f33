import json

import pytest
import torch

from unimat_core.model import pretrained
from unimat_core.model.checkpoint import load_checkpoint, load_model
from unimat_core.model.composition_prior import PriorConfig
from unimat_core.model.config import DenoiserConfig, DiffusionConfig, TrainConfig
from unimat_core.model.training import train
from unimat_core.tensor_store import tensorize_frame
from tests.unimat_core.conftest import overfit_config


@pytest.mark.parametrize("name", ["perov_5", "carbon_24"])
def test_shipped_models_load_by_name_offline(name):
    """The package carries its checkpoints: loading needs no network and no training."""
    assert name in pretrained.available()
    loaded = load_model(f"pretrained:{name}")
    assert loaded.step > 0 and loaded.prior is not None
    assert loaded.prior.atom_counts.sum() == {"perov_5": 3787, "carbon_24": 2032}[name]  # the val split's cells
    card = (pretrained.PRETRAINED_DIR / name / "MODEL_CARD.md").read_text()
    for heading in ("Data", "Command", "Steps", "CPU-hours", "Metrics"):
        assert heading in card


@pytest.mark.parametrize("name", ["perov_5", "carbon_24"])
def test_shipped_configs_read_back_unchanged(name):
    """The configs the shipped checkpoints keep as plain dicts (saved by the dataclass code before the configs became
    pydantic) read back through `from_dict` and write out as the very same dicts."""
    state = load_checkpoint(f"pretrained:{name}")
    for config, stored in ((DenoiserConfig, state["model_config"]), (DiffusionConfig, state["diffusion_config"]),
                           (TrainConfig, state["train_config"]), (PriorConfig, state["composition_prior"]["config"]),
                           (TrainConfig, json.loads((pretrained.PRETRAINED_DIR / name / "config.json").read_text()))):
        assert config.from_dict(stored).as_dict() == stored, config.__name__
    assert TrainConfig.from_dict(state["train_config"]).denoiser_config().as_dict() == state["model_config"]


def test_bad_pretrained_names_fail_clearly():
    with pytest.raises(pretrained.PretrainedError, match="unknown pretrained model 'perov5'; shipped: pretrained:"):
        load_checkpoint("pretrained:perov5")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint("/nonexistent/last.pt")


def test_missing_shipped_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "MODEL_CARD.md").write_text("# toy")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(pretrained.PretrainedError, match="last.pt is missing from the installed package"):
        pretrained.resolve("pretrained:toy")


def test_fine_tuning_starts_from_the_weights_and_resumes(overfit_model, handful, tmp_path):
    _, summary = overfit_model
    _, dataset = handful
    first = train(overfit_config(dataset, tmp_path / "ft", init_from=summary.checkpoint, max_steps=3, preset="paper"))
    tuned = load_checkpoint(first.checkpoint)
    base = load_checkpoint(summary.checkpoint)
    assert first.step == 3 and first.resumed_from == 0
    assert tuned["model_config"] == base["model_config"]  # the shape comes from the checkpoint, not the preset
    drift = max((tuned["ema"][k] - base["ema"][k]).abs().max().item() for k in base["ema"])
    assert 0 < drift < 0.05  # started from the trained weights, moved a little
    again = train(overfit_config(dataset, tmp_path / "ft", init_from=summary.checkpoint, max_steps=5, preset="paper"))
    assert again.resumed_from == 3 and again.step == 5


def test_a_fine_tune_without_its_own_prior_keeps_its_parents(overfit_model, handful, tmp_path):
    """A campaign round fine-tunes with composition_prior=False: its model still samples compositions first."""
    _, summary = overfit_model
    _, dataset = handful
    tuned = train(overfit_config(dataset, tmp_path / "ft", init_from=summary.checkpoint, max_steps=2,
                                 composition_prior=False))
    parent = load_checkpoint(summary.checkpoint)["composition_prior"]
    kept = load_checkpoint(tuned.checkpoint)["composition_prior"]
    assert kept["config"] == parent["config"] and kept["atom_counts"] == parent["atom_counts"]
    assert all(torch.equal(kept["state"][name], weights) for name, weights in parent["state"].items())
    scratch = train(overfit_config(dataset, tmp_path / "scratch", max_steps=2, composition_prior=False))
    assert "composition_prior" not in load_checkpoint(scratch.checkpoint)


def test_fine_tuning_on_data_of_another_grid_fails_clearly(overfit_model, bundled_tables, tmp_path):
    _, summary = overfit_model
    tensorize_frame(bundled_tables["carbon_24"].head(4), tmp_path / "carbon", crop_grid=True)
    with pytest.raises(ValueError, match=r"does not fit the data in .*carbon: grid \(9, 18\) vs \(1, 1\)"):
        train(overfit_config(tmp_path / "carbon", tmp_path / "ft", init_from=summary.checkpoint, max_steps=2))
