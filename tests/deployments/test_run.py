"""`python -m deployments.run` and the sbatch example fail fast and clearly on bad input."""

from __future__ import annotations

import os
import subprocess

import pytest

from deployments.run import main
from tests.deployments.server import REPO

SBATCH = REPO / "deployments" / "slurm" / "run_campaign.sbatch"


def test_bad_flow_name_or_parameters_exit_2_before_any_flow_run(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["relax-on-dask", "--params", "{not json"])
    with pytest.raises(SystemExit):
        main(["relax-on-dask", "--params", '{"foo": 1}'])
    assert main(["relax-on-dask", "--params", '{"cluster": {"kind": "slurm", "walltime": "2h"}}']) == 2
    assert main(["relax-on-dask", "--params", '{"relax": {"calculator": "nosuch"}}']) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "--params is not JSON" in err and "no parameter(s) ['foo']" in err
    assert "cluster.slurm.walltime" in err and "unknown calculator 'nosuch'" in err


def test_sbatch_example_is_valid_bash_and_needs_the_server_url(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0
    text = SBATCH.read_text()
    assert "#SBATCH --cpus-per-task=" in text and "deployments.run campaign-on-dask" in text
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run(["bash", str(SBATCH)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "PREFECT_API_URL" in proc.stderr
    proc = subprocess.run(["bash", str(SBATCH)], env={**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "no .venv here" in proc.stderr
    assert not any(tmp_path.iterdir())
