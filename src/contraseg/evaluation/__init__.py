"""Metrics, the modality-subset protocol, statistics and reports."""
