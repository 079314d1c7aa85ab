"""Benchmark workloads; every module here is imported by ``benchmarks/run.py``.

Add a module (e.g. ``ecl.py``) with functions decorated by ``harness.workload``; give each a
``baseline`` (for PXD generators: ``PXD_BASELINE`` from ``workloads.pxd``, the paper's generator)
and the issue's absolute ``target``.
"""
