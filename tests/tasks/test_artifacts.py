"""Artifact helpers: Prefect-valid keys, real PNG plots written to disk, plain markdown tables."""

import math

import pandas as pd

from tasks.artifacts import artifact_key, file_links, histogram_png, inline_image, loss_curve_png, markdown_table


def test_artifact_keys_are_lowercase_letters_digits_and_dashes():
    assert artifact_key("My_Campaign.v2", "top candidates") == "my-campaign-v2-top-candidates"
    assert artifact_key("__", "") == "unimat"


def test_histogram_and_loss_curve_are_png_files_and_inline_images(tmp_path):
    png = histogram_png([0.1, -0.05, float("nan"), 0.3, 0.02], tmp_path / "h.png", title="t", xlabel="eV/atom",
                        markers={"hull": 0.0})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert inline_image(png, "h").startswith("![h](data:image/png;base64,iVBOR")
    assert histogram_png([float("nan")], tmp_path / "none.png", title="t", xlabel="x") is None
    assert inline_image(None, "x") == ""

    metrics = tmp_path / "metrics.csv"
    pd.DataFrame({"step": [1, 2, 2, 3], "loss": [3.0, 2.0, 2.1, 1.0], "loss_atoms": [1, 1, 1, 0.5],
                  "loss_lattice": [2, 1, 1, 0.5]}).to_csv(metrics, index=False)
    curve = loss_curve_png(metrics, tmp_path / "loss.png")
    assert curve.stat().st_size > 1000
    assert loss_curve_png(tmp_path / "missing.csv", tmp_path / "x.png") is None


def test_markdown_table_and_links(tmp_path):
    frame = pd.DataFrame({"formula": ["SrTiO3", "A|B"], "e": [0.12345, math.nan], "stable": [True, False]})
    text = markdown_table(frame)
    assert text.splitlines()[0] == "| formula | e | stable |"
    assert "| SrTiO3 | 0.123 | True |" in text and "| A/B |  | False |" in text
    assert markdown_table(frame.iloc[:0]) == "_(none)_\n"
    (tmp_path / "a.parquet").write_bytes(b"x")
    assert file_links({"a": tmp_path / "a.parquet", "gone": tmp_path / "b"}) == f"* a: `{tmp_path / 'a.parquet'}`\n"
