"""Benchmarks (inference, ingest, end to end); run as ``python -m bench.<name>``, see bench/README.md."""
