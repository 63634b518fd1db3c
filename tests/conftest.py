import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis, when it reports a failing example, imports a module that warns about
    # mypy_extensions; with warnings as errors that hides the failure behind an INTERNALERROR.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
    # httpx iterates a body through async generators of its own, nested in the one a caller
    # holds (Response.aiter_raw over BoundAsyncStream.__aiter__ over the transport's stream;
    # ByteStream.__aiter__ for a body in memory). A caller closes the one it holds
    # (runner.providers.httpclient.chunks); the ones inside it nobody can reach, so when a
    # body is left unread (an answer over its cap, a request refused mid-body) trio warns as
    # they are collected (encode/httpx#3686; the fix, httpx#3777, is not released). Only
    # these two of httpx's own are let through; an unclosed generator of ours still fails.
    for inner in ("httpx._client.BoundAsyncStream.__aiter__",
                  "httpx._content.ByteStream.__aiter__"):
        config.addinivalue_line(
            "filterwarnings",
            f"ignore:Async generator '{inner}' was garbage collected:ResourceWarning")


# The anyio pytest plugin runs every `async def` test marked `anyio` once per backend this
# fixture names: the runner promises structured concurrency through anyio only, so the
# asyncio-only API that slips in fails on trio. Named here, not left to the plugin's default
# (whatever backends happen to be installed), so that a machine without trio fails instead
# of quietly testing one backend. Module scope, as the plugin's own: the tests of one file
# run on asyncio, then on trio.
@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
