"""Dataset sources that all produce the structure table of `unimat_core.structure_table`."""

from unimat_core.datasets.bundled import BUNDLED_DATASETS, bundled_csv_paths, load_bundled
from unimat_core.datasets.cdvae_csv import LoadResult, read_cdvae_csv
from unimat_core.datasets.materials_project import MaterialsProjectError, MP20Query, fetch_materials_project

__all__ = [
    "BUNDLED_DATASETS",
    "LoadResult",
    "MP20Query",
    "MaterialsProjectError",
    "bundled_csv_paths",
    "fetch_materials_project",
    "load_bundled",
    "read_cdvae_csv",
]
