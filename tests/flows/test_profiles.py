"""Campaign profiles: each names only real stage fields, with valid values that override (differ from) the
declared defaults; the campaign applies its profile to the groups it is not given."""

import pytest

from flows.params import STAGE_MODELS, CampaignParams
from flows.profiles import PROFILES, check_profiles


def test_every_profile_overrides_real_fields_with_valid_values():
    check_profiles(STAGE_MODELS)  # what flows.params runs at import
    for name, groups in PROFILES.items():
        params = CampaignParams(profile=name, shipped_model=False)
        for group, values in groups.items():
            for field, value in values.items():
                assert getattr(getattr(params, group), field) == value, (name, group, field)


def test_a_profile_that_repeats_a_default_or_names_no_field_is_refused(monkeypatch):
    monkeypatch.setitem(PROFILES, "bad", {"relax": {"max_steps": 300}})  # RelaxConfig's own default
    with pytest.raises(ValueError, match="declared default"):
        check_profiles(STAGE_MODELS)
    monkeypatch.setitem(PROFILES, "bad", {"relax": {"max_stepz": 150}})
    with pytest.raises(ValueError, match="no field 'max_stepz'"):
        check_profiles(STAGE_MODELS)
    monkeypatch.setitem(PROFILES, "bad", {"relax": {"max_steps": -1}})
    with pytest.raises(ValueError):
        check_profiles(STAGE_MODELS)


def test_stages_profile_is_the_declared_defaults_and_given_groups_win():
    stages = CampaignParams(profile="stages", shipped_model=False)
    for group, model in STAGE_MODELS.items():
        assert getattr(stages, group) == model(), group
    demo = CampaignParams()
    assert demo.profile == "demo" and demo.relax.max_steps == PROFILES["demo"]["relax"]["max_steps"]
    given = CampaignParams(relax={"calculator": "emt"})  # a group given is taken as given, over the profile
    assert given.relax.calculator == "emt" and given.relax.max_steps == STAGE_MODELS["relax"]().max_steps
    assert given.train.max_steps == PROFILES["demo"]["train"]["max_steps"] and given.train.max_minutes is None


def test_the_command_line_applies_its_profile_under_the_options_given(tmp_path):
    from flows.cli import _params, build_parser

    def campaign(*options: str) -> CampaignParams:
        args = build_parser().parse_args(["campaign", "--results-root", str(tmp_path), *options])
        return _params(args)["params"]

    demo = campaign("--relax-steps", "50")
    assert demo.profile == "demo" and demo.relax.max_steps == 50  # the option wins over the profile
    assert demo.relax.optimizer == PROFILES["demo"]["relax"]["optimizer"]
    assert demo.generate.compositions == PROFILES["demo"]["generate"]["compositions"]
    stages = campaign("--profile", "stages", "--relax-steps", "50")
    assert stages.profile == "stages" and stages.relax.max_steps == 50
    assert stages.relax.optimizer == STAGE_MODELS["relax"]().optimizer and stages.train.max_minutes is None
