"""Discovery benchmark logic: conditional UniMat generation vs AIRSS-style random search, same calculator.

Everything lives under `<campaign>/discovery/` and every step resumes from what is on disk:

    settings.json                    what the folder was made with (a rerun with other settings is refused)
    targets.parquet                  target cell formulas and how many known structures each has
    known/structures.parquet         the known (test-split) structures of the targets
    reference/structures.parquet     reference "elemental" only: the element's reference phases (carbon: diamond,
                                     graphite), relaxed instead of the known structures, which are only matched
    unimat/generated/part-*.parquet  raw conditional samples (invalid decodes kept), timing.json
    unimat/candidates.parquet        K candidates per target: id, target_formula, trial, valid, reason, seconds
    random/candidates.parquet        the same for random structure search
    relaxed/<known|reference|unimat|random>/chunk-XXXXX/part-*.parquet   dft.batch relaxations, one folder per chunk
    results.parquet, per_composition.parquet, curves.parquet, summary.parquet, report.md, convergence.png
    lowest.parquet, paper_metrics.json   the UniMat paper's AIRSS metrics: convergence rate, lowest energy per
                                     composition and method, reduction rate (report.paper_metrics)

Two references: "known" (perov_5, any compound dataset): a target's energy is measured against its lowest
relaxed known structure. "elemental" (carbon_24, one-element datasets): targets are cell formulas (C6 ... C24),
measured against the element's best known phase relaxed the same way; known structures of the target's cell
are matched as stored (the test split's own relaxed cells), not relaxed, which keeps 700 C6 cells affordable.

Budget rule: each method proposes exactly K candidates per composition, and a proposal that fails
(an invalid UniMat decode, a sample whose composition is not the target or whose atoms are closer than
0.5 A, a random cell with no room under the distance rule) is a spent trial without an energy. This is
conservative for the method that fails (its k-th relaxation may come from fewer usable candidates) and
costs it no relaxation time. Random search rejects cells breaking its distance rule while it builds them;
UniMat's analogue is `--oversample N`: N x K samples are drawn and the first K usable ones proposed (the
sampling time of all N x K is charged), so both methods spend their K relaxations on usable structures.

Scoring uses converged relaxations only by default: a relaxation stopped by its step or time limit
can report an energy far below any real structure (a collapsed cell), which would count as "reached".

Compute time of a candidate = its share of generation time (UniMat: its batch's sampling + decoding
time divided by the batch size, model loading excluded; random: building that cell) + its relaxation
wall time (batched ML relaxations: its atom-weighted share of each batched step). Calculator loading is
not counted for either method.

The whole benchmark is this package, plain Python (no Prefect): `benchmark` (settings, targets, candidates,
relaxation plan and chunks through the one relaxation engine dft.batch, scoring), `random_search` (the
AIRSS-style baseline), `reference_phases` (an element's best known phases) and `report` (tables, curves,
markdown, plot, the paper's metrics). `tasks/discovery.py` wraps its steps as
tasks and `flows/discovery.py` composes them; `unimat discover-benchmark` takes the relax and generate
stages' own options (RelaxParams, GenerateParams) plus DiscoveryParams.
"""

from dft.discovery_benchmark.benchmark import (  # noqa: F401 - the package's public steps
    SET_BY_BENCHMARK,
    DiscoveryParams,
    DiscoverySettingsMismatch,
    benchmark_settings,
    check_settings,
    compact_formula,
    plan_relaxation,
    prepare_targets,
    relaxation_sets,
    random_search_candidates,
    read_relaxed_set,
    relax_chunk_rows,
    report_files,
    sampling_settings,
    score,
    select_targets,
    unimat_candidates,
)
