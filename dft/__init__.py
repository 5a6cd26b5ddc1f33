"""The energy side, no Prefect: calculators, relaxation, reference hulls, formation and decomposition energies.

Public entry points (plain functions; tasks/ wrap them):

- `dft.calculators`: `CalculatorConfig(name="chgnet"|"sevennet"|"emt"|"gpaw"|"vasp"|"espresso")`,
  `build_calculator`, `register_calculator`, `CalculatorUnavailable`.
- `dft.relax`: `RelaxConfig`, `relax_structure(structure, calculator, config) -> RelaxResult` (one by one, ASE).
- `dft.engine`: `relax_structures(structures, calculator, config) -> list[RelaxResult]`, the engine every caller
  uses: batched for ML potentials (`dft.batched` on `dft.potentials`, `dft.optimizers`, `dft.cell_filter`),
  one by one otherwise; `RelaxConfig.engine` overrides.
- `dft.batch`: `relax_table(frame, out_dir, calculator=, config=, chunk_size=, n_workers=) -> BatchSummary`,
  `read_relaxed(out_dir)`, `finished_ids(out_dir)`.
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
  `ClusterConfig`, `cluster_inputs`, `cluster_relax` (VASP / Quantum ESPRESSO through quacc).
"""
