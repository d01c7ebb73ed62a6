import pytest


def pytest_collection_modifyitems(items):
    """Everything under tests/reliability/ is part of the reliability suite."""
    for item in items:
        if "/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
