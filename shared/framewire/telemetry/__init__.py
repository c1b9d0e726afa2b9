"""Telemetry: traces, metrics, structured logs, the embedded span store, energy meters."""
