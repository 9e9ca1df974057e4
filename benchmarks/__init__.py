"""Benchmarks of the TT layers against dense, single-einsum and TensorLy-Torch layers.

Run ``python -m benchmarks.run --help``. Benchmark-only: nothing here is imported
by the library or timed by the test suite.
"""
