"""Records name the software that made an output; a resume under other versions goes on and says so."""

from importlib.metadata import version

from unimat_core.provenance import StageRecord, read_record, reconcile, software_changes, software_versions
from unimat_core.run_layout import RunLayout


def _layout(tmp_path) -> RunLayout:
    return RunLayout(tmp_path / "runs", "c")


def _made(layout: RunLayout, stage: str, software: dict) -> None:
    """A stage run once with `software`, with one output file."""
    reconcile(layout, StageRecord(stage, {"fmax": 0.05}, {"upstream": "abc"}, {"software": software}))
    (layout.stage_dir(stage) / "part-00000.parquet").write_bytes(b"output")


def test_software_versions_name_this_package_the_model_code_and_python():
    versions = software_versions()
    assert versions["torch"] == version("torch") and versions["pymatgen"] == version("pymatgen")
    assert versions["unimat-discovery"] == version("unimat-discovery") and versions["python"].count(".") == 2


def test_a_resume_under_other_versions_keeps_the_output_and_says_so_until_it_is_redone(tmp_path):
    layout = _layout(tmp_path)
    _made(layout, "relax", {"chgnet": "0.3.0", "torch": "2.13.0"})
    message = reconcile(layout, StageRecord("relax", {"fmax": 0.05}, {"upstream": "abc"},
                                            {"software": {"chgnet": "0.4.0", "torch": "2.13.0"}}))
    assert message == ("relax: resuming output made with other software (chgnet 0.3.0 -> 0.4.0); its finished parts "
                       "are kept. To redo it with this software: add --overwrite relax")
    assert (layout.stage_dir("relax") / "part-00000.parquet").exists()
    assert read_record(layout, "relax").about["software"]["chgnet"] == "0.3.0"  # what made the output, still
    again = reconcile(layout, StageRecord("relax", {"fmax": 0.05}, {"upstream": "abc"},
                                          {"software": {"chgnet": "0.4.0", "torch": "2.13.0"}}))
    assert again == message  # said on every rerun until the stage is redone
    reconcile(layout, StageRecord("relax", {"fmax": 0.05}, {"upstream": "abc"},
                                  {"software": {"chgnet": "0.4.0", "torch": "2.13.0"}}), overwrite=True)
    assert read_record(layout, "relax").about["software"]["chgnet"] == "0.4.0"  # redone: the new versions made it


def test_the_same_software_or_a_record_without_versions_resumes_quietly(tmp_path):
    layout = _layout(tmp_path)
    _made(layout, "relax", {"chgnet": "0.3.0"})
    assert reconcile(layout, StageRecord("relax", {"fmax": 0.05}, {"upstream": "abc"},
                                         {"software": {"chgnet": "0.3.0"}})) == ""
    _made(layout, "generate", {})  # a record from before versions were kept
    assert reconcile(layout, StageRecord("generate", {"fmax": 0.05}, {"upstream": "abc"},
                                         {"software": {"torch": "2.13.0"}})) == ""


def test_stages_rebuilt_on_every_run_say_nothing_of_versions(tmp_path):
    layout = _layout(tmp_path)
    _made(layout, "score", {"chgnet": "0.3.0"})
    assert reconcile(layout, StageRecord("score", {"fmax": 0.05}, {"upstream": "abc"},
                                         {"software": {"chgnet": "0.4.0"}})) == ""


def test_software_changes_lists_added_and_removed_distributions():
    assert software_changes({"sevenn": "0.9"}, {"chgnet": "0.3.0"}) == "chgnet (none) -> 0.3.0, sevenn 0.9 -> (none)"
    assert software_changes({}, {"chgnet": "0.3.0"}) == ""
