"""OpenTelemetry for trioflow (spans, metrics, exporters)."""
