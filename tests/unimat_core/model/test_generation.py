import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition

from tests.unimat_core.model.conftest import overfit_config
from unimat_core.model.checkpoint import load_model
from unimat_core.model.generation import (
    CompositionError,
    GenerateConfig,
    composition_counts,
    export_cifs,
    generate,
    read_generated,
)
from unimat_core.model.training import train
from unimat_core.representation import UniMatSpec
from unimat_core.structure_table import CORE_COLUMNS, structure_from_json, structures_of
from unimat_core.tensor_store import tensorize_frame


def test_overfit_model_regenerates_its_training_crystals(overfit_model, tmp_path):
    frame, summary = overfit_model
    formulas = tuple(frame["formula"].str.replace(" ", ""))
    result = generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path), compositions=formulas,
                                     samples_per_composition=2, steps=50, guidance=0.0, device="cpu"))
    generated = read_generated(tmp_path)
    assert result.n_generated == 8 and generated["valid"].all()
    matcher = StructureMatcher(ltol=0.1, stol=0.2, angle_tol=3)
    for original, (_, rows) in zip(structures_of(frame), generated.groupby("target_formula", sort=False)):
        assert any(matcher.fit(original, structure_from_json(s)) for s in rows["structure"])


def test_conditional_samples_have_exactly_the_requested_composition(overfit_model, tmp_path):
    _, summary = overfit_model
    targets = ("SrTiO3", "Ba2TiO3", "LiF", "KMgF3")  # includes compositions never seen in training
    generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path), compositions=targets,
                            samples_per_composition=3, steps=20, guidance=1.0, device="cpu"))
    generated = read_generated(tmp_path)
    assert len(generated) == 12
    for _, row in generated.iterrows():
        if row["valid"]:
            assert Composition(row["formula"]) == Composition(row["target_formula"])
        else:
            assert row["reason"]


def test_generation_writes_parts_as_it_goes_and_resumes(overfit_model, tmp_path):
    _, summary = overfit_model
    config = GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path), num_samples=10, batch_size=4, steps=5,
                            device="cpu", cpu_threads=1)  # one lane: the crash lands between two batches

    def crash_after_first(done, total, n):
        if done == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(config, on_batch=crash_after_first)
    assert sorted(p.name for p in tmp_path.glob("part-*.parquet")) == ["part-00000.parquet"]
    first = read_generated(tmp_path)

    result = generate(config)
    assert result.n_skipped_parts == 1 and result.n_generated == 10 and len(result.parts) == 3
    everything = read_generated(tmp_path)
    assert everything["id"].is_unique and list(everything.columns[: len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    assert everything.head(4)["id"].tolist() == first["id"].tolist()
    assert set(everything["valid"]) <= {True, False} and (everything.loc[~everything["valid"], "reason"].str.len() > 0).all()
    assert export_cifs(everything, tmp_path / "cifs") == int(everything["valid"].sum())


def test_parallel_lanes_draw_the_same_samples_as_one(overfit_model, tmp_path):
    _, summary = overfit_model
    frames = []
    for threads in (1, 2):  # 2 threads: two batches at once on one thread each (where the machine has 2 cores)
        out = tmp_path / f"threads-{threads}"
        generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(out), num_samples=8, batch_size=2, steps=5,
                                device="cpu", cpu_threads=threads))
        frames.append(read_generated(out))
    assert frames[0]["id"].tolist() == frames[1]["id"].tolist()
    assert frames[0]["structure"].tolist() == frames[1]["structure"].tolist()


def test_bad_compositions_fail_before_any_work(overfit_model, tmp_path):
    _, summary = overfit_model
    spec = load_model(summary.checkpoint).spec
    assert composition_counts("SrTiO3", spec).sum() == 5
    for formula, message in [("Na)(", "not a chemical formula"), ("Xx2O", "Xx0\\+ is not on the periodic-table grid"), ("NaCl0.5", "not a positive integer"),
                             ("Na4Cl", "exceed the model's 3 slots"), ("Og", "not on the periodic-table grid")]:
        with pytest.raises(CompositionError, match=message):
            generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path / "x"),
                                    compositions=("SrTiO3", formula), device="cpu"))
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_unconditional_generation_decodes_or_explains(overfit_model, tmp_path):
    _, summary = overfit_model
    generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path), num_samples=6, steps=10, device="cpu"))
    generated = read_generated(tmp_path)
    assert len(generated) == 6 and generated["target_formula"].isna().all()
    assert (generated["valid"] | generated["reason"].notna()).all()
    assert isinstance(UniMatSpec(max_atoms_per_element=3).null_value, float) and np.isfinite(generated["n_sites"]).all()


def test_a_model_on_a_cropped_grid_trains_and_generates(bundled_tables, tmp_path):
    """carbon_24 on its cropped grid is one cell (L x 1 x 1): the denoiser, training and pinning still work."""
    frame = bundled_tables["carbon_24"].head(8).reset_index(drop=True)
    tensorize_frame(frame, tmp_path / "ds", crop_grid=True, max_atoms_per_element=24)
    summary = train(overfit_config(tmp_path / "ds", tmp_path / "train", max_steps=5))
    spec = load_model(summary.checkpoint).spec
    assert spec.grid.shape == (1, 1) and spec.shape[0] == 24
    generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path / "gen"), compositions=("C8", "C12"),
                            samples_per_composition=2, steps=5, device="cpu"))
    generated = read_generated(tmp_path / "gen")
    assert len(generated) == 4
    # a 5-step model's lattices may be degenerate (recorded with the reason); the atoms are pinned exactly
    valid = generated[generated["valid"]]
    assert generated.loc[~generated["valid"], "reason"].str.startswith("degenerate lattice").all() and len(valid)
    sizes = {"C8": 8, "C12": 12}
    for target, structure in zip(valid["target_formula"], valid["structure"]):
        crystal = structure_from_json(structure)
        assert crystal.composition.reduced_formula == "C" and len(crystal) == sizes[target]
    with pytest.raises(CompositionError, match="Si is not on the periodic-table grid \\(this cropped grid holds only the 1 elements"):
        generate(GenerateConfig(checkpoint=summary.checkpoint, out_dir=str(tmp_path / "x"), compositions=("SiC",), device="cpu"))
