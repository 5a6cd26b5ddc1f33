"""Typed flow parameters: the demo defaults are the ones the README promises, bad values fail early."""

import gzip

import pandas as pd
import pytest
from pydantic import ValidationError
from pymatgen.core import Composition

from tests.conftest import perov5_test_csv
from flows.params import DEMO_COMPOSITIONS, CampaignParams, EvaluateParams, RelaxParams, ScoreParams, TrainParams
from unimat_core.datasets.bundled import bundled_csv_paths
from unimat_core.metrics import MetricsConfig
from unimat_core.model.config import DiffusionConfig
from unimat_core.model.training import TrainConfig


def _formulas(split: str) -> set[str]:
    with gzip.open(bundled_csv_paths("perov_5")[split], "rt") as fh:
        return {Composition(f).formula for f in pd.read_csv(fh, usecols=["formula"])["formula"]}


def test_demo_defaults():
    params = CampaignParams()
    assert params.source.name == "perov_5" and params.train.preset == "tiny" and params.train.max_steps <= 1000
    assert params.relax.calculator == "chgnet" and params.score.reference == "offline"
    assert params.stop_after == "evaluate"
    assert len(params.generate.compositions) * params.generate.samples_per_composition == 32
    assert params.evaluate.reference_limit == 1000 and params.evaluate.coverage_on == "subset"
    # unseen targets: in the test split, not in the split the demo trains on (val)
    test, val = _formulas("test"), _formulas("val")
    for formula in DEMO_COMPOSITIONS:
        composition = Composition(formula)
        assert composition.num_atoms == 5 and max(composition.values()) <= 3
        assert composition.formula in test and composition.formula not in val


def test_bad_values_are_rejected(tmp_path):
    with pytest.raises(ValidationError, match="unknown calculator"):
        RelaxParams(calculator="nope")
    with pytest.raises(ValidationError):
        RelaxParams(time_limit_s=0)
    with pytest.raises(ValidationError, match="not found"):
        ScoreParams(reference=str(tmp_path / "missing.parquet"))
    with pytest.raises(ValidationError, match="no coverage cutoffs"):
        EvaluateParams(dataset="nope")
    with pytest.raises(ValidationError):
        CampaignParams(stop_after="nothing")
    with pytest.raises(ValidationError):
        EvaluateParams(reference_limit=0)
    with pytest.raises(ValidationError):
        EvaluateParams(coverage_on="some")
    hull = tmp_path / "hull.csv"
    hull.write_text("id,composition,energy_per_atom,source,energy_scale\nmp-30,Cu,-3.73,test,mp2020\n")
    assert ScoreParams(reference=str(hull)).kind == "file"
    assert EvaluateParams().metrics_config("perov_5", str(tmp_path)).cache_dir.endswith(".cache/fingerprints")
    skip = EvaluateParams(matching=False).metrics_config("carbon_24", str(tmp_path))
    assert isinstance(skip, MetricsConfig)
    assert skip.matching is False and skip.dataset == "carbon_24"


def test_train_params_reach_the_diffusion_config():
    def config(params: TrainParams) -> TrainConfig:
        return TrainConfig.from_dict({**params.as_dict(), "dataset": "d", "out_dir": "o"})

    assert config(TrainParams()).diffusion == DiffusionConfig()
    unconditional = config(TrainParams(prediction="v", slot_loss="slots", max_minutes=3))
    assert (unconditional.diffusion.prediction, unconditional.diffusion.slot_loss) == ("v", "slots")
    assert unconditional.max_minutes == 3 and unconditional.preset == "tiny"
    with pytest.raises(ValidationError):
        TrainParams(slot_loss="atoms")


def test_a_bundled_source_with_a_shipped_model_fine_tunes_it_on_its_cropped_grid(tmp_path):
    demo = CampaignParams()
    assert demo.train.init_from == "pretrained:perov_5" and demo.tensorize.crop_grid
    carbon = CampaignParams(source={"kind": "bundled", "name": "carbon_24"})
    assert carbon.train.init_from == "pretrained:carbon_24" and carbon.tensorize.crop_grid
    scratch = CampaignParams(shipped_model=False)
    assert scratch.train.init_from is None and not scratch.tensorize.crop_grid
    csv = perov5_test_csv(tmp_path / "x.csv", 5)
    own = CampaignParams(source={"kind": "csv", "name": "x", "csv_paths": (str(csv),)})
    assert own.train.init_from is None  # no shipped model fits a user's data


def test_generate_records_the_settings_its_model_recommends_and_a_new_recommendation_is_a_change(tmp_path):
    """Unset, guidance and steps are the model's (sampling.json beside its checkpoint): the record keeps what was
    sampled with, so earlier folders sampled at 1 and 10 still resume, and a changed recommendation stops the rerun."""
    from flows.params import GenerateParams, RunParams, stage_settings
    from unimat_core.provenance import StageChanged, StageRecord, check_settings, write_record

    layout = RunParams(campaign="c", results_root=str(tmp_path)).layout()
    groups = {"generate": GenerateParams()}
    settings = stage_settings("generate", groups, layout)
    assert (settings["guidance"], settings["steps"]) == (1.0, 10)  # no model yet, no recommendation
    layout.generated.mkdir(parents=True)
    (layout.generated / "part-00000.parquet").write_bytes(b"made at 1")
    write_record(layout, StageRecord("generate", settings, {}, {}))
    check_settings(layout, "generate", stage_settings("generate", groups, layout))  # resumes

    layout.train_checkpoint.parent.mkdir(parents=True)
    (layout.train_checkpoint.parent / "sampling.json").write_text('{"guidance": 0.25}')
    assert stage_settings("generate", groups, layout)["guidance"] == 0.25
    with pytest.raises(StageChanged, match=r"guidance 1.0 -> 0.25"):
        check_settings(layout, "generate", stage_settings("generate", groups, layout))
    check_settings(layout, "generate", stage_settings("generate", {"generate": GenerateParams(guidance=1)}, layout))
    assert "noise_scale" not in settings  # at 1, as every run sampled before the option: out of the record
    (layout.train_checkpoint.parent / "sampling.json").write_text('{"noise_scale": 0.5}')
    with pytest.raises(StageChanged, match=r"noise_scale"):
        check_settings(layout, "generate", stage_settings("generate", groups, layout))
    check_settings(layout, "generate", stage_settings("generate", {"generate": GenerateParams(noise_scale=1)}, layout))

    shipped = GenerateParams(model="pretrained:perov_5")
    assert stage_settings("generate", {"generate": shipped}, layout)["guidance"] == 0.0
    assert shipped.for_run(str(layout.train_checkpoint), "out").steps == 20
    assert GenerateParams(model="pretrained:carbon_24").for_run("unused", "out").guidance == 2.0
