"""Thin Prefect tasks: read parquet, call unimat_core / dft, write parquet, return paths + small summaries."""
