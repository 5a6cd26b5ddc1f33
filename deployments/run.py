"""Run one deployable flow by name with JSON parameters, in this process (inside a batch allocation).

    python -m deployments.run relax-on-dask --params '{"run": {"campaign": "c1"}, "cluster": {"kind": "local", "n_workers": 16}}'

The flow reports to whatever server PREFECT_API_URL names; parameters are validated by the flow's
pydantic types before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys

FLOWS = {  # name -> "module:function", imported only when chosen
    "campaign": "flows.campaign:discovery_campaign",
    "campaign-on-dask": "deployments.dask_flows:campaign_on_dask",
    "relax-on-dask": "deployments.dask_flows:relax_on_dask",
    "generate-on-dask": "deployments.dask_flows:generate_on_dask",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.run", description=__doc__.splitlines()[0])
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument("--params", default="{}", help="flow parameters as a JSON object")
    args = parser.parse_args(argv)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        parser.error(f"--params is not JSON: {exc}")
    if not isinstance(params, dict):
        parser.error("--params must be a JSON object of parameter name -> value")

    import importlib

    from prefect.exceptions import ParameterTypeError
    from pydantic import ValidationError

    module, name = FLOWS[args.flow].split(":")
    flow = getattr(importlib.import_module(module), name)
    unknown = sorted(set(params) - set(flow.parameters.properties))
    if unknown:
        parser.error(f"{args.flow} has no parameter(s) {unknown}; parameters: {sorted(flow.parameters.properties)}")
    try:  # before any flow run exists
        flow.validate_parameters(params)
    except (ValidationError, ParameterTypeError) as exc:
        print(f"error: bad parameters for {args.flow}: {exc}", file=sys.stderr)
        return 2
    result = flow(**params)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
