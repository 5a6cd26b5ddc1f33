"""The energy side, no Prefect: calculators, relaxation, reference hulls, formation and decomposition energies."""
