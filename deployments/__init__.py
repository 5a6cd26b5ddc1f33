"""Prefect deployment definitions (prefect.yaml) and cluster configuration."""
