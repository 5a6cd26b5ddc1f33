"""Discovery benchmark flow on a 2-composition EMT toy run: real Prefect, a really trained (tiny) UniMat
model, real random search, real EMT relaxations and StructureMatcher. Known structures are built by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from prefect.artifacts import Artifact
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

from dft.calculators import CalculatorConfig
from dft.relax import relax_structure
from flows.discovery import DiscoveryParams, discovery_benchmark
from flows.params import GenerateParams, RelaxParams, RunParams
from dft.discovery_benchmark import DiscoverySettingsMismatch, check_settings, score
from unimat_core.model.config import DenoiserConfig
from tests.cli_output import summary_json
from unimat_core.model.training import TrainConfig, train
from unimat_core.structure_table import records_to_frame, write_structures
from unimat_core.tensor_store import tensorize_frame

K = 3
TARGETS = ("Cu3Au1", "Cu1Au1")
EMT = RelaxParams(calculator="emt", fmax=0.05, max_steps=25, time_limit_s=20, chunk_size=4)


def cu3au(a: float = 3.75) -> Structure:
    """L1_2 Cu3Au."""
    return Structure(Lattice.cubic(a), ["Au", "Cu", "Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def cuau(a: float = 2.80, c: float = 3.67) -> Structure:
    """L1_0 CuAu, primitive tetragonal cell."""
    return Structure(Lattice.tetragonal(a, c), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Known structures (hand-built) and a tiny model trained for a few steps on strained copies of them."""
    root = tmp_path_factory.mktemp("discovery")
    rng = np.random.default_rng(0)
    training = []
    for i in range(8):
        s = (cu3au if i % 2 == 0 else cuau)()
        s.apply_strain(rng.uniform(-0.03, 0.03, 3))
        s.perturb(0.05)
        training.append(s)
    frame = records_to_frame(training, [f"train-{i}" for i in range(8)], split="train", source="toy")
    tensorize_frame(frame, root / "tensors")
    summary = train(TrainConfig(dataset=str(root / "tensors"), out_dir=str(root / "train"), max_steps=10, batch_size=4,
                                learning_rate=3e-3, warmup_steps=5, augment=False, augment_translate=False,
                                checkpoint_every=10, log_every=5, device="cpu",
                                model=DenoiserConfig(width=16, blocks_per_level=1, heads=2, time_dim=32)))
    known = records_to_frame([cu3au(), cuau(), cuau(2.9, 3.5)], ["cu3au-l12", "cuau-l10", "cuau-strained"],
                             split="test", source="hand")
    known_path = write_structures(known, root / "known.parquet")
    return root, summary.checkpoint, known_path


SAMPLING = GenerateParams(steps=5, batch_size=4, device="cpu", seed=1)


def params(toy, campaign: str = "toy") -> tuple[RunParams, DiscoveryParams]:
    root, checkpoint, known = toy
    run = RunParams(campaign=campaign, results_root=str(root / "runs"))
    discovery = DiscoveryParams(checkpoint=checkpoint, compositions=TARGETS, known=str(known),
                                relaxations_per_composition=K,
                                converged_only=False)  # few relax steps: score every relaxation with an energy
    return run, discovery


@pytest.fixture(scope="module")
def toy_run(toy):
    """The toy benchmark, run once for this module (the CLI test resumes it)."""
    run, discovery = params(toy)
    return run, discovery, discovery_benchmark(run, discovery, EMT, SAMPLING)


@pytest.mark.slow
def test_discovery_benchmark_toy_run_is_consistent_and_resumes(toy_run):
    run, discovery, result = toy_run
    folder = run.layout().campaign_dir / "discovery"
    for name in ("report.md", "results.parquet", "per_composition.parquet", "curves.parquet", "summary.parquet",
                 "settings.json", "targets.parquet"):
        assert (folder / name).exists(), name
    assert (folder / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["targets"]["compositions"] == list(TARGETS) and result["targets"]["n_known"] == 3
    assert result["n_scored"] == 2 and result["unscored"] == []

    # counts: K proposals per composition and method, each relaxed once if it was a usable structure
    results = pd.read_parquet(folder / "results.parquet")
    assert len(results) == 2 * len(TARGETS) * K
    for (method, composition), group in results.groupby(["method", "composition"]):
        assert group["trial"].tolist() == list(range(K))
        assert (group["relaxed"] == group["valid"]).all()  # every usable candidate was relaxed, nothing else
    assert result["relaxed_now"]["known"] == 3
    assert result["relaxed_now"]["unimat"] + result["relaxed_now"]["random"] == int(results["valid"].sum())
    assert result["candidates"]["random"]["n_valid"] == len(TARGETS) * K  # room for 2-4 metal atoms: all built
    assert (results["seconds"] >= 0).all() and (results.loc[results["relaxed"], "seconds"] > 0).all()

    # the reference is the lowest known energy, as relaxing the hand-built structures directly gives
    relax = EMT.relax_config()
    direct = {"Cu3Au1": relax_structure(cu3au(), CalculatorConfig("emt"), relax).energy_per_atom,
              "Cu1Au1": min(relax_structure(s, CalculatorConfig("emt"), relax).energy_per_atom
                            for s in (cuau(), cuau(2.9, 3.5)))}
    per_composition = pd.read_parquet(folder / "per_composition.parquet")
    for composition, energy in direct.items():
        rows = per_composition[per_composition["composition"] == composition]
        assert rows["known_energy_per_atom"].to_numpy() == pytest.approx(energy, abs=1e-6)

    # best after k is a running minimum, and relaxations-to-reach agrees with the trial energies
    curves = pd.read_parquet(folder / "curves.parquet")
    assert sorted(curves["k"].unique()) == [1, 2, 3]
    for _, group in curves.groupby(["method", "composition"]):
        values = group.sort_values("k")["best_energy_per_atom"].fillna(1e9).to_numpy()  # NaN: nothing relaxed yet
        assert (np.diff(values) <= 1e-12).all()
    for row in per_composition.itertuples():
        trials = results[(results["method"] == row.method) & (results["composition"] == row.composition)]
        hits = np.flatnonzero(trials["energy_per_atom"].to_numpy() <= row.known_energy_per_atom + 0.010)
        assert (row.relaxations_to_reach == hits[0] + 1) if len(hits) else np.isnan(row.relaxations_to_reach)
        assert row.budget == K and row.failed == int(trials["energy_per_atom"].isna().sum())
        assert row.seconds == pytest.approx(trials["seconds"].sum())
    summary = pd.read_parquet(folder / "summary.parquet").set_index("method")
    assert sorted(summary.index) == ["random", "unimat"] and (summary["compositions"] == 2).all()

    report = (folder / "report.md").read_text()
    assert "Cu3Au1" in report and "Lowest energy found after k relaxations" in report
    assert_paper_metrics_agree(folder, results, result)
    markdown = Artifact.get("toy-discovery-report")
    assert markdown is not None and "convergence.png" in markdown.data
    table = Artifact.get("toy-discovery-per-composition")
    assert table is not None and "relaxations_to_reach" in str(table.data)

    # a rerun reuses every candidate and relaxation, and gives the same numbers
    parts = sorted(folder.glob("relaxed/*/chunk-*/part-*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in parts]
    again = discovery_benchmark(run, discovery, EMT, SAMPLING)
    assert again["n_chunks"] == 0 and again["targets"]["reused"] and again["candidates"]["random"]["reused"]
    assert result["candidates"]["unimat"]["reused_parts"] == 0 and again["candidates"]["unimat"]["reused_parts"] == 2
    assert [p.stat().st_mtime_ns for p in sorted(folder.glob("relaxed/*/chunk-*/part-*.parquet"))] == mtimes
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet"), results)

    # rescoring with converged relaxations only drops exactly the unconverged energies
    strict = score(folder, K, 0.010, converged_only=True)
    rescored = pd.read_parquet(folder / "results.parquet")
    assert (rescored["energy_per_atom"].notna() == (results["energy_per_atom"].notna() & results["converged"])).all()
    assert set(strict["reference"]) <= set(direct)


def assert_paper_metrics_agree(folder, results: pd.DataFrame, result: dict) -> None:
    """The paper's numbers in paper_metrics.json / lowest.parquet / report.md, recomputed here from results.parquet."""
    paper = json.loads((folder / "paper_metrics.json").read_text())
    assert paper == {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in result["paper"].items()}
    lowest = pd.read_parquet(folder / "lowest.parquet").set_index("composition")
    by = results.groupby(["composition", "method"])
    for (composition, method), group in by:
        assert lowest.loc[composition, f"converged_{method}"] == group["converged"].any()
        expected = group["energy_per_atom"].min()
        assert (np.isnan(expected) and np.isnan(lowest.loc[composition, f"lowest_{method}"])) or \
            lowest.loc[composition, f"lowest_{method}"] == pytest.approx(expected)
    for method in ("unimat", "random"):
        rate = results[results["method"] == method].groupby("composition")["converged"].any().mean()
        assert paper["convergence_rate"][method] == pytest.approx(rate)
    both = lowest.dropna(subset=["lowest_unimat", "lowest_random"])
    difference = both["lowest_random"] - both["lowest_unimat"]
    assert paper["compared"] == len(both) and paper["reduced"] == int((difference > 0.001).sum())
    if len(both):
        assert paper["reduction_rate"] == pytest.approx((difference > 0.001).mean())
        assert paper["mean_difference"] == pytest.approx(difference.mean())
    assert "## Paper metrics (UniMat vs AIRSS protocol)" in (folder / "report.md").read_text()


def copper(n: int) -> Structure:
    """Hand-built Cu cells as the "known" structures of the elemental toy: hcp (2 atoms), fcc x 3 (3 atoms)."""
    if n == 2:
        return Structure(Lattice.hexagonal(2.55, 4.16), ["Cu"] * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    fcc = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    primitive = fcc.get_primitive_structure()
    primitive.make_supercell([n, 1, 1])
    return primitive


@pytest.mark.slow
def test_elemental_reference_toy_run(toy):
    """Reference "elemental" (the carbon_24 mode) with EMT on copper: targets are cells, the reference is Cu's best
    relaxed prototype (as relaxing the prototypes directly gives), known cells are matched as stored, not relaxed."""
    from dft.discovery_benchmark.reference_phases import reference_phases

    root, checkpoint, _ = toy
    known = records_to_frame([copper(2), copper(3)], ["cu-hcp", "cu-fcc3"], split="test", source="hand")
    known_path = write_structures(known, root / "known-cu.parquet")
    run = RunParams(campaign="toy-elemental", results_root=str(root / "runs"))
    discovery = DiscoveryParams(checkpoint=checkpoint, compositions=("Cu2", "Cu3"), known=str(known_path),
                                relaxations_per_composition=K, reference="elemental", converged_only=False)
    result = discovery_benchmark(run, discovery, EMT, SAMPLING)
    folder = run.layout().campaign_dir / "discovery"
    assert result["targets"]["compositions"] == ["Cu2", "Cu3"] and result["n_scored"] == 2
    assert set(result["relaxed_now"]) == {"reference", "unimat", "random"} and result["relaxed_now"]["reference"] == 5
    assert not (folder / "relaxed" / "known").exists()  # known cells are matched as stored

    relax = EMT.relax_config()
    best = min(relax_structure(s, CalculatorConfig("emt"), relax).energy_per_atom for s in reference_phases("Cu").values())
    per_composition = pd.read_parquet(folder / "per_composition.parquet")
    assert per_composition["known_energy_per_atom"].to_numpy() == pytest.approx(best, abs=1e-6)
    results = pd.read_parquet(folder / "results.parquet")
    assert len(results) == 2 * 2 * K and set(results["composition"]) == {"Cu2", "Cu3"}
    curves = pd.read_parquet(folder / "curves.parquet")
    assert sorted(curves["k"].unique()) == [1, 2, 3]
    report = (folder / "report.md").read_text()
    assert "## Reference phases" in report and "best known phase of the element" in report
    assert_paper_metrics_agree(folder, results, result)


def test_resuming_with_other_settings_is_refused(tmp_path):
    check_settings(tmp_path, {"k": 3, "seed": 1})
    check_settings(tmp_path, {"k": 3, "seed": 1})  # same settings: fine
    with pytest.raises(DiscoverySettingsMismatch, match=r"different settings \(k\)"):
        check_settings(tmp_path, {"k": 5, "seed": 1})
    assert json.loads((tmp_path / "settings.json").read_text()) == {"k": 3, "seed": 1}


def test_bad_parameters_fail_before_any_work(tmp_path):
    with pytest.raises(ValidationError, match="not a chemical formula"):
        DiscoveryParams(compositions=("Cu3Au", "Xx9!"))
    with pytest.raises(ValidationError):
        DiscoveryParams(relaxations_per_composition=0)
    run = RunParams(campaign="nomodel", results_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="`train` stage"):
        discovery_benchmark.fn(run, DiscoveryParams(), EMT)
    assert not (tmp_path / "nomodel" / "discovery").exists()


@pytest.mark.slow
def test_cli_discover_benchmark_maps_options_to_the_same_run(toy_run, capsys):
    """`unimat discover-benchmark` with the toy run's settings resumes it: nothing is generated or relaxed again."""
    from flows.cli import main

    run, discovery, first = toy_run
    relax = EMT
    args = ["discover-benchmark", "--campaign", run.campaign, "--results-root", run.results_root,
            "--checkpoint", discovery.checkpoint, "--known", discovery.known, "--compositions", ",".join(TARGETS),
            "--k", str(K), "--sampling-steps", "5", "--gen-batch-size", "4", "--gen-device", "cpu", "--seed", "1",
            "--calculator", "emt", "--fmax", str(relax.fmax), "--relax-steps", str(relax.max_steps),
            "--time-limit", str(relax.time_limit_s), "--chunk-size", str(relax.chunk_size), "--all-energies"]
    assert main(args) == 0
    out = capsys.readouterr().out
    result = summary_json(out)
    assert result["n_chunks"] == 0 and result["targets"]["reused"] and result["n_scored"] == first["n_scored"]
    assert main(["discover-benchmark", "--compositions", "Cu3Au,Xx!"]) == 2
    assert "not a chemical formula" in capsys.readouterr().err
