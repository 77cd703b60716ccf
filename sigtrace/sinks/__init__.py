"""Sinks turn a finished operation into a span, metric points and one audit event.

They know OpenTelemetry and structlog, not ORMs.
"""
