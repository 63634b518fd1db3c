import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis, when it reports a failing example, imports a module that warns about
    # mypy_extensions; with warnings as errors that hides the failure behind an INTERNALERROR.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
