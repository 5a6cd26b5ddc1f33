"""Prefect flows: one per stage plus the discovery campaign that chains them. Flows only compose tasks."""
