"""Every test of the experiments is an integration test (training, real data, CLIs): marked ``integration``.

``make test`` and CI run them; ``make test-lib`` runs the library's tests without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
