"""Pipelines: stages with workers, back-pressure, batching, retries and dead letters."""
