from __future__ import annotations

import numpy as np

from tests.unimat_core.metrics.conftest import cubic_perovskite, rocksalt, table_of
from unimat_core.metrics import cache
from unimat_core.metrics.analysis import analyse_structures


def test_key_depends_on_ids_and_structures():
    table = table_of([rocksalt(), cubic_perovskite()])
    key = cache.table_key(table["id"], table["structure"])
    assert key == cache.table_key(table["id"], table["structure"])
    assert key != cache.table_key(["x", "s1"], table["structure"])
    assert key != cache.table_key(table["id"], [table["structure"][0], table["structure"][0]])


def test_save_then_load_round_trips(tmp_path):
    table = table_of([rocksalt(), cubic_perovskite()])
    analysis = analyse_structures(table["structure"].tolist())
    key = cache.table_key(table["id"], table["structure"])
    assert cache.load(tmp_path, key) is None
    cache.save(tmp_path, key, analysis)
    loaded = cache.load(tmp_path, key)
    np.testing.assert_array_equal(loaded.struct_fp, analysis.struct_fp)
    np.testing.assert_array_equal(loaded.comp_fp, analysis.comp_fp)
    assert loaded.frame["valid"].tolist() == [True, True]
    assert not list(tmp_path.glob(".*tmp"))  # no temp folder left behind
