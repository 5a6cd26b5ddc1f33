from tests.unimat_core.conftest import overfit_config  # noqa: F401 (the model tests import it from here)
