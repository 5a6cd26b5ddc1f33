import json
import shutil

import pytest

from unimat_core.model.checkpoint import load_model
from unimat_core.model.config import GenerateConfig
from unimat_core.model.generation import generate, read_generated
from unimat_core.model.pretrained import checkpoint_file
from unimat_core.model.config import CSPConfig
from unimat_core.model.sampling_defaults import (FALLBACK_GUIDANCE, FALLBACK_NOISE_SCALE, FALLBACK_STEPS, SAMPLING_FILE,
                                                 SamplingDefaultsError, read_sampling_defaults, with_recommended)
from unimat_core.model.training import train
from tests.unimat_core.conftest import overfit_config


@pytest.fixture
def model_folder(overfit_model, tmp_path):
    """A copy of the overfit checkpoint in a folder of its own, where a test may write a sampling.json."""
    _, summary = overfit_model
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(summary.checkpoint, folder / "last.pt")
    return folder


def recommend(folder, **fields) -> None:
    (folder / SAMPLING_FILE).write_text(json.dumps(fields))


@pytest.mark.parametrize(("name", "guidance", "steps", "noise_scale"),
                         [("perov_5", 0.0, 20, 0.6), ("carbon_24", 2.0, 20, 0.4)])
def test_shipped_models_recommend_what_was_measured_best_for_them(name, guidance, steps, noise_scale):
    recommended = read_sampling_defaults(checkpoint_file(f"pretrained:{name}"))
    assert (recommended.guidance, recommended.steps, recommended.noise_scale) == (guidance, steps, noise_scale)
    assert "RESULTS.md" in recommended.why
    assert recommended.sampler == "dpm++2m-sde"  # what the steps were measured with, and the default sampler
    config = load_model(f"pretrained:{name}").recommended(GenerateConfig())
    assert (config.guidance, config.steps, config.noise_scale) == (guidance, steps, noise_scale)
    assert load_model(f"pretrained:{name}").recommended(GenerateConfig(sampler="ddim")).noise_scale == 1.0


def test_what_is_asked_wins_and_a_folder_without_recommendation_falls_back(model_folder):
    assert (FALLBACK_GUIDANCE, FALLBACK_STEPS["dpm++2m-sde"], FALLBACK_NOISE_SCALE) == (1.0, 10, 1.0)
    assert with_recommended(CSPConfig(), read_sampling_defaults(model_folder / "last.pt")).model_dump(
        include={"guidance", "steps", "noise_scale"}) == {"guidance": 1.0, "steps": 10, "noise_scale": 1.0}
    recommend(model_folder, guidance=0.5)
    loaded = load_model(model_folder / "last.pt")
    assert (loaded.recommended(CSPConfig()).guidance, loaded.recommended(CSPConfig()).steps) == (0.5, 10)
    assert loaded.recommended(CSPConfig(guidance=3.0, steps=4)).model_dump(include={"guidance", "steps"}) == \
        {"guidance": 3.0, "steps": 4}


def test_unset_settings_sample_exactly_as_the_recommended_ones(overfit_model, model_folder, tmp_path):
    frame, _ = overfit_model
    recommend(model_folder, guidance=0.0, steps=3, noise_scale=0.5)

    def draw(guidance, steps, noise_scale, name):  # conditional: guidance weighs the composition against no condition
        generate(GenerateConfig(checkpoint=str(model_folder / "last.pt"), out_dir=str(tmp_path / name),
                                compositions=tuple(frame["formula"][:2]), samples_per_composition=2, batch_size=4,
                                steps=steps, guidance=guidance, noise_scale=noise_scale, device="cpu", cpu_threads=1))
        return read_generated(tmp_path / name)["structure"].tolist()

    unset = draw(None, None, None, "unset")
    assert unset == draw(0.0, 3, 0.5, "asked")
    for changed in (draw(1.0, 3, 0.5, "guided"), draw(0.0, 4, 0.5, "longer"), draw(0.0, 3, 1.0, "hotter")):
        assert unset != changed  # each setting changes the samples


@pytest.mark.parametrize(("text", "problem"), [("{not json", "Expecting property name"),
                                               ('{"guidance": -1}', "greater than or equal to 0"),
                                               ('{"steps": 0}', "greater than or equal to 1"),
                                               ('{"noise_scale": -0.5}', "noise_scale: Input should be greater"),
                                               ('{"guidance": 1, "stepz": 5}', "stepz: Extra inputs")])
def test_a_malformed_recommendation_is_named_with_what_is_wrong(model_folder, text, problem):
    (model_folder / SAMPLING_FILE).write_text(text)
    with pytest.raises(SamplingDefaultsError, match=rf"{SAMPLING_FILE}: not a valid sampling recommendation \(.*{problem}"):
        load_model(model_folder / "last.pt")


def test_a_fine_tune_inherits_its_parents_recommendation_unless_it_has_its_own(model_folder, handful, tmp_path):
    _, dataset = handful
    recommend(model_folder, guidance=0.0, steps=7, why="measured")
    tuned = train(overfit_config(dataset, tmp_path / "ft", init_from=str(model_folder / "last.pt"), max_steps=2))
    inherited = read_sampling_defaults(tuned.checkpoint)
    assert (inherited.guidance, inherited.steps) == (0.0, 7)
    assert inherited.why == f"inherited from {model_folder / 'last.pt'}: measured"

    own = tmp_path / "own" / "checkpoints"
    own.mkdir(parents=True)
    recommend(own, guidance=1.5)
    train(overfit_config(dataset, tmp_path / "own", init_from=str(model_folder / "last.pt"), max_steps=2))
    assert read_sampling_defaults(own / "last.pt").guidance == 1.5


@pytest.mark.parametrize(("sampler", "steps"), [("dpm++2m-sde", 20), ("dpm++2m", 10), ("ddim", 50), ("ddpm", 100)])
def test_recommended_steps_apply_to_the_sampler_they_were_measured_with_only(model_folder, sampler, steps):
    """20 steps of the stochastic solver are not 20 of DDPM, nor is its noise scale DDPM's: another sampler takes
    its own fallbacks, while the guidance weight (the model's) applies to all."""
    recommend(model_folder, sampler="dpm++2m-sde", guidance=2.0, steps=20, noise_scale=0.4)
    config = load_model(model_folder / "last.pt").recommended(GenerateConfig(sampler=sampler))
    assert (config.guidance, config.steps) == (2.0, steps)
    assert config.noise_scale == (0.4 if sampler == "dpm++2m-sde" else 1.0)
    assert load_model(model_folder / "last.pt").recommended(GenerateConfig(sampler=sampler, steps=7)).steps == 7


def test_a_recommendation_naming_no_sampler_applies_to_any(model_folder):
    """Files written before recommendations named their sampler keep meaning what they meant."""
    recommend(model_folder, steps=12)
    assert load_model(model_folder / "last.pt").recommended(CSPConfig(sampler="ddim")).steps == 12


def test_an_unknown_sampler_in_a_recommendation_is_named(model_folder):
    recommend(model_folder, sampler="euler", steps=12)
    with pytest.raises(SamplingDefaultsError, match=r"\(sampler: Input should be .ddim."):
        load_model(model_folder / "last.pt")
