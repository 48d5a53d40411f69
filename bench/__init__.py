"""Benchmarks and capacity tooling: measurements against a running service, and the models that
turn them into settings (``python -m bench.hpa`` sizes the HorizontalPodAutoscaler)."""
