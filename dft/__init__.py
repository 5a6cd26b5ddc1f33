"""The energy side, no Prefect: calculators, relaxation, reference hulls, formation and decomposition energies.

Public entry points (plain functions; tasks/ wrap them):

- `dft.calculators`: `CalculatorConfig(name="chgnet"|"sevennet"|"emt"|"gpaw"|"vasp"|"espresso")`,
  `build_calculator`, `register_calculator`, `CalculatorUnavailable`; `OUT_OF_PROCESS_BACKENDS`, the one table
  that sends gpaw / vasp / espresso to their backend module's `relax_out_of_process`.
- `dft.relax`: `RelaxConfig` (the one declaration of the relaxation settings; the CLI options derive from it),
  `relax_structure(structure, calculator, config) -> RelaxResult` (one by one, ASE), `record_outcome` (every
  backend's verdict: converged, or why not).
- `dft.engine`: `relax_structures(structures, calculator, config) -> list[RelaxResult]`, the engine every caller
  uses: batched for ML potentials (`dft.batched` on `dft.potentials`, `dft.optimizers`, `dft.cell_filter`),
  one by one otherwise; `RelaxConfig.engine` overrides.
- `dft.batch`: the engine's chunks, used by the relax stage, the score stage's reference, the discovery
  benchmark and Dask: `plan_chunks` (skip finished ids), `cached_calculator` (one per process), `relax_rows`
  (the one result builder), `relax_ids` (one atomic part), `relax_table(frame, out_dir, ...)`, `read_relaxed`.
- `dft.scoring`: the score stage on a run folder (reference plan, offline / MP / file hull on one scale, scores,
  S.U.N.).
- `dft.discovery_benchmark`: the discovery benchmark, conditional UniMat vs random structure search.
- `dft.elemental`: `elemental_references(elements, calculator, config)` (same-calculator hull corners).
- `dft.prototypes`: `binary_decorations(a, b)` (OQMD-style binary prototypes, both decorations).
- `dft.reference_cache`: `ReferenceCache(root, calculator, relax).ensure(systems)` / `.read(systems)`: elemental
  and binary prototypes relaxed once per chemical system, keyed by calculator and settings; `hull_systems`.
- `dft.energy_scale`: `EnergyScale`, `plan_scales` (which side gets MP2020 corrections, or a refusal),
  `on_hull_scale`; each calculator's scale from `dft.calculators.energy_scale`.
- `dft.hull`: `reference_from_relaxed`, `read_reference`/`write_reference`, `reference_scale`, `score_candidates`,
  `sun_summary`.
- `dft.reference_checks`: elemental energies and textbook binaries of a hull against MP.
- `dft.mp_reference`: `reference_from_mp(chemical_systems, api_key=None)`.
- `dft.gpaw_runner`: `GpawConfig`, `relax_gpaw` (Debian GPAW in a subprocess); `dft.cluster`:
  `DftCodeConfig`, `cluster_inputs`, `cluster_relax` (VASP / Quantum ESPRESSO through quacc).
"""
