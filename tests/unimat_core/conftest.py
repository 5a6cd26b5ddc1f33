from __future__ import annotations

import pytest

from unimat_core.model.config import DenoiserConfig
from unimat_core.model.training import TrainConfig, train
from unimat_core.tensor_store import tensorize_frame


@pytest.fixture(scope="session")
def handful(bundled_tables, tmp_path_factory):
    """Four perov_5 crystals as a tensor dataset."""
    frame = bundled_tables["perov_5"].head(4).reset_index(drop=True)
    path = tmp_path_factory.mktemp("handful") / "ds"
    tensorize_frame(frame, path)
    return frame, path


def overfit_config(dataset, out_dir, **overrides) -> TrainConfig:
    settings = dict(dataset=str(dataset), out_dir=str(out_dir), model=DenoiserConfig(width=32, blocks_per_level=1, heads=2, time_dim=64),
                    max_steps=1500, batch_size=4, learning_rate=3e-3, warmup_steps=20, augment=False, log_every=50,
                    checkpoint_every=500, ema_decay=0.99, device="cpu")
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def overfit_model(handful, tmp_path_factory):
    """A small model trained to memorise the four crystals (~20 s on 2 cores); shared by the model and metric tests."""
    frame, dataset = handful
    out = tmp_path_factory.mktemp("overfit")
    summary = train(overfit_config(dataset, out))
    return frame, summary
