"""A campaign in rounds for real (Prefect, a trained tiny model, EMT, pymatgen's StructureMatcher): three rounds
with new candidates each, a discovery table that grows without duplicates, and a round killed part way that
resumes with --round 2 without touching round 1."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from prefect.artifacts import Artifact
from pymatgen.analysis.structure_matcher import StructureMatcher

from flows.campaign import discovery_campaign
from flows.cli import _params, build_parser, main
from tests.flows.helpers import metal_campaign_args
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures, structure_from_json


def _files(folder) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _round(args: list[str], asked: str) -> dict:
    return discovery_campaign(**_params(build_parser().parse_args([*args, "--round", asked, "--stop-after", "score"])))


def _generated(layout: RunLayout) -> set[str]:
    frame = pd.read_parquet(layout.generated)
    return set(frame["structure"].dropna())


@pytest.mark.slow
def test_three_rounds_grow_the_discoveries_and_a_killed_round_resumes(tmp_path, trained_metals):
    root = tmp_path / "runs"
    shutil.copytree(trained_metals["campaign_dir"], root / "metals")  # fetch, tensorize, train: shared by every round
    args = metal_campaign_args(root, trained_metals["csv"], trained_metals["hull"])
    base = RunLayout(root.resolve(), "metals")

    first = _round(args, "next")
    assert first["round"] == 1 and first["train"]["reused"]
    round_1 = _files(base.round_dir(1))

    # round 2 in its own process, killed once its samples are written (during relax or score)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / "prefect")}  # its own database
    cli = [sys.executable, "-m", "flows.cli", *args, "--round", "next", "--stop-after", "score"]
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any(base.for_round(2).generated.glob("part-*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert base.campaign_lock.exists()
        # a second round of the same campaign while one runs is refused at once, naming the running one
        assert main([*args, "--round", "next"]) == 2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (base.for_round(2).round_status.exists() and "done" in base.for_round(2).round_status.read_text())
    # the parts finished before the kill (one or more: on a loaded machine the kill may land inside generate)
    written = {path.name: path.read_bytes() for path in base.for_round(2).generated.glob("part-*.parquet")}

    second = _round(args, "2")  # the stale lock of the killed run is taken over
    assert second["round"] == 2 and second["generate"]["n_reused_parts"] == len(written) >= 1
    assert all((base.for_round(2).generated / name).read_bytes() == data for name, data in written.items())
    assert _files(base.round_dir(1)) == round_1  # round 1 untouched
    third = _round(args, "next")
    assert third["round"] == 3

    seeds = {r["plan"]["seed"] for r in (first, second, third)}
    assert len(seeds) == 3
    samples = [_generated(base.for_round(n)) for n in (1, 2, 3)]
    assert not (samples[0] & samples[1]) and not (samples[1] & samples[2]) and not (samples[0] & samples[2])

    rounds = pd.read_parquet(base.round_stats)
    assert rounds["round"].tolist() == [1, 2, 3]
    assert rounds["cumulative_new"].diff().dropna().gt(0).all() and rounds["n_new"].iloc[0] > 0, rounds
    table = pd.read_parquet(base.discoveries)
    assert table["id"].is_unique and len(table) == rounds["n_new"].sum()  # the rerun of round 2 added no copy
    assert table.groupby("round").size().to_dict() == dict(zip(rounds["round"], rounds["n_new"]))
    # no duplicate survives: not among the finds, not against the dataset
    matcher = StructureMatcher()
    known = read_structures(base.structures)
    for formula, group in table.groupby("reduced_formula"):
        found = [structure_from_json(s) for s in group["structure"]]
        others = [structure_from_json(s) for s in known.loc[known["reduced_formula"] == formula, "structure"]]
        for i, structure in enumerate(found):
            assert not any(matcher.fit(structure, other) for other in found[i + 1:] + others), group["id"].iloc[i]
    assert base.discoveries_plot.exists()
    summary = Artifact.get("metals-campaign")  # the campaign artifact shows the table and the cumulative plot
    assert "metals round 3" in summary.data and "data:image/png;base64" in summary.data
    assert table.sort_values("decomposition_energy")["id"].iloc[0] in summary.data
    assert (base.round_dir(3) / "plan.json").exists() and not base.campaign_lock.exists()


def test_bad_rounds_fail_before_any_work(tmp_path, capsys):
    root = ["--results-root", str(tmp_path)]
    assert main(["campaign", *root, "--round", "last"]) == 2
    assert main(["campaign", *root, "--round", "3"]) == 2
    assert main(["campaign", *root, "--round", "next", "--explore", "0.8", "--exploit", "0.5"]) == 2
    assert main(["campaign", *root, "--round", "next", "--round-targets", "Sr-Xx-O"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and "--round: 'last' is not a round" in err[0]
    assert "rounds up to 0; start the next one with --round next" in err[1]
    assert "--explore 0.8 + --exploit 0.5 exceed 1" in err[2] and "--round-targets: 'Sr-Xx-O'" in err[3]
    assert not any(tmp_path.iterdir())
