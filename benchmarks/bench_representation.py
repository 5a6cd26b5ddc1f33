"""UniMat encode/decode throughput on the bundled data, and CIF parsing time measured apart.

Run: `make benchmarks` (or `.venv/bin/python benchmarks/bench_representation.py`).
Prints a table; copy it into benchmarks/RESULTS.md with the machine it ran on.
"""

from __future__ import annotations

import gzip
import os
import platform
import time

import pandas as pd

from unimat_core.datasets.bundled import bundled_csv_paths
from unimat_core.datasets.cdvae_csv import parse_cifs
from unimat_core.representation import UniMatSpec, decode_arrays, encode, to_structures
from unimat_core.structure_table import structure_from_json


def best_of(repeats: int, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    rows = []
    for name in ("perov_5", "carbon_24"):
        cifs = [c for split, path in bundled_csv_paths(name).items() for c in pd.read_csv(gzip.open(path, "rt"))["cif"]]
        n = len(cifs)
        t_cif_1, _ = best_of(1, lambda: parse_cifs(cifs, workers=1))
        t_cif_2, parsed = best_of(1, lambda: parse_cifs(cifs, workers=2))
        structures = [structure_from_json(p["structure"]) for p in parsed]
        spec = UniMatSpec.fit(structures)
        t_enc, batch = best_of(3, lambda: encode(structures, spec))
        t_arr, arrays = best_of(3, lambda: decode_arrays(batch.coords, batch.lattice, spec))
        t_obj, _ = best_of(3, lambda: to_structures(arrays))
        total = t_enc + t_arr + t_obj
        rows.append({
            "dataset": name, "structures": n, "L": spec.max_atoms_per_element,
            "CIF parse 1 proc (s)": round(t_cif_1, 2), "CIF parse 2 procs (s)": round(t_cif_2, 2),
            "encode (struct/s)": round(n / t_enc), "decode to arrays (struct/s)": round(n / t_arr),
            "decode to Structure (struct/s)": round(n / (t_arr + t_obj)),
            "encode+decode (struct/s)": round(n / total),
        })
    table = pd.DataFrame(rows).set_index("dataset").T
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table.to_markdown())


if __name__ == "__main__":
    main()
