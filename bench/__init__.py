"""Benchmark suites of folio-offload and their CLI (``offload bench ...``)."""
