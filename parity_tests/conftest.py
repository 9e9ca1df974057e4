"""Parity tests: prints the largest error measured per check at the end of the session.

Tolerances, error measures and references live in :mod:`parity_tests.helpers`
(importable, unlike a conftest).
"""

from __future__ import annotations

from parity_tests.helpers import MEASURED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not MEASURED:
        return
    terminalreporter.section("parity: largest errors measured")
    width = max(len(name) for name in MEASURED)
    for name in sorted(MEASURED):
        terminalreporter.write_line(f"{name:<{width}}  {MEASURED[name]:.2e}")
