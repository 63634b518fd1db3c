"""runner.engine.early on its own: how an answer to an early request reads, what the state
directory remembers, and the modes a recipe may name. (The runs against the fake, both
readings of the service, are in test_early_release.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.engine import early
from runner.errors import (
    AuthError,
    CreditsError,
    PossiblySubmitted,
    ProviderError,
    StepError,
    TaskFailed,
    TransientError,
    Withheld,
)
from runner.fake import FakeServer
from runner.pacing import SEND_CHECK, FakeClock
from runner.providers.http import ApiClient
from runner.recipe import load as recipes
from runner.recipe.model import mode_of

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

WAV = "POST /api/v1/wav/generate"


@pytest.mark.parametrize(("exc", "how"), [
    # The service says why: a refusal for being early, whatever the code.
    (StepError(f"{WAV}: the service rejected the request (400: task 1f has not finished)",
               code=400), early.SAYS),
    (StepError(f"{WAV}: HTTP 422: audio is still being generated", code=422), early.SAYS),
    (StepError(f"{WAV}: the service rejected the request (400: 任务未完成)", code=400),
     early.SAYS),
    (StepError(f"{WAV}: the service rejected the request (409: status is FIRST_SUCCESS)",
               code=409), early.SAYS),
    (StepError(f"{WAV}: (413: the clip is not ready)", code=413), early.SAYS),
    (TransientError(f"{WAV}: service error (500: task not completed yet)", code=500),
     early.SAYS),
    # A definite refusal that does not say why: perhaps the same; tried once more later.
    (StepError(f"{WAV}: the service rejected the request (409: conflict)", code=409),
     early.MAYBE),
    (StepError(f"{WAV}: the service rejected the request (404: audioId not found)",
               code=404), early.MAYBE),
    (StepError(f"{WAV}: the service rejected the request (400: invalid audioId)",
               code=400), early.MAYBE),
    (StepError(f"{WAV}: the service rejected the request (422: validation error)",
               code=422), early.MAYBE),
    # Not a refusal for being early.
    (StepError(f"{WAV}: the service rejected the request (413: prompt too long)",
               code=413), None),
    (StepError("convert needs a track made by the service as 'audio'"), None),
    (StepError(f"{WAV}: the service redirects (HTTP 301) to https://x", code=301), None),
    (TransientError(f"{WAV}: service error (500: server error)", code=500), None),
    (TransientError(f"{WAV}: rate limited (430: not ready for more)", code=430), None),
    (TransientError(f"{WAV}: cannot reach 127.0.0.1:9 (ConnectError)"), None),
    (PossiblySubmitted(f"{WAV}: the answer was lost (HTTP 502 from a gateway); not "
                       "finished", code=502), None),
    (CreditsError(f"{WAV}: insufficient credits (402: not finished)", code=402), None),
    (AuthError(f"{WAV}: the service refused the key (401)", code=401), None),
    (TaskFailed("the service failed task 1f: GENERATE_WAV_FAILED (not completed)",
                code=501), None),
])
def test_only_a_definite_answer_reads_as_a_refusal_for_being_early(exc: ProviderError,
                                                                 how: str | None) -> None:
    assert early.refusal(exc) == how


def test_modes_and_hosts() -> None:
    assert [mode_of(v) for v in ("auto", True, False)] == ["auto", "always", "never"]
    assert early.host_of("HTTP://API.Example.org/") == "http://api.example.org"
    assert early.host_of("https://relay.example/v1/") == "https://relay.example/v1"


@pytest.mark.parametrize(("value", "mode"), [("", "auto"), (", release_on_first: auto",
                                                            "auto"),
                                             (", release_on_first: true", "always"),
                                             (", release_on_first: false", "never")])
def test_the_recipe_takes_auto_and_the_old_booleans(tmp_path: Path, value: str,
                                                    mode: str) -> None:
    (tmp_path / "r.yaml").write_text(
        f"version: 1\nname: r\nprovider: {{kind: sunoapi{value}}}\n"
        "steps:\n  song:\n    uses: generate\n    with: {prompt: la}\n")
    assert recipes.load(tmp_path / "r.yaml").provider.release_on_first == mode


def test_the_memory_is_versioned_and_written_whole(tmp_path: Path) -> None:
    mem = early.Memory.load(tmp_path)
    assert not mem.refuses("http://h", "convert")
    assert mem.learn("http://h", "convert", "task 1f has not finished")
    assert not mem.learn("http://h", "convert", "again")  # known already
    mem.save()
    doc = json.loads((tmp_path / early.FILE).read_text())
    assert doc["version"] == early.VERSION
    assert doc["refused"]["http://h"]["convert"]["message"] == "task 1f has not finished"
    assert [p.name for p in tmp_path.iterdir()] == [early.FILE]  # no temporary file left
    again = early.Memory.load(tmp_path)
    assert again.refuses("http://h", "convert")
    assert not again.refuses("http://h", "extend")
    assert not again.refuses("http://other", "convert")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": "1"}',
                                  '{"version": 1, "refused": [1, 2]}'])
def test_a_damaged_memory_is_read_as_empty(tmp_path: Path, text: str) -> None:
    # A speed-up's record: a damaged file costs at most one free refusal per operation.
    (tmp_path / early.FILE).write_text(text)
    mem = early.Memory.load(tmp_path)
    assert mem.refused == {}
    assert mem.writable


def test_a_memory_from_a_newer_sunoflow_is_neither_read_nor_overwritten(
        tmp_path: Path) -> None:
    path = tmp_path / early.FILE
    text = json.dumps({"version": early.VERSION + 1, "hosts": {}})
    path.write_text(text)
    mem = early.Memory.load(tmp_path)
    assert mem.learn("http://h", "convert", "not finished")
    mem.save()
    assert path.read_text() == text



async def test_a_submit_withdrawn_while_it_waited_for_the_rate_limiter_never_leaves() -> None:
    """The engine's SEND_CHECK runs after the rate limiter and before the request is sent:
    a refusal learned meanwhile keeps an early submit here (errors.Withheld). Requests
    that cannot pay (polls, uploads) are never held."""
    key = "sk-early-withheld-0042"
    learned = []

    def check() -> None:
        if learned:
            raise Withheld("convert is refused early by this host")

    with FakeServer("sunoapi", api_key=key) as srv:
        config = recipes.Provider(kind="sunoapi", base_url=srv.url, rate_limit=(1, 10.0))

        async def main() -> list[int]:
            api = ApiClient(config, env={"SUNO_API_KEY": key}, clock=FakeClock())
            SEND_CHECK.set(check)
            try:
                sent = [(await api.send("GET", "/api/v1/generate/credit", step="a",
                                        submit=True)).status]
                learned.append("convert")  # while the next one waits for the window
                with pytest.raises(Withheld):
                    await api.send("POST", "/api/v1/wav/generate", step="b", submit=True,
                                   json={"taskId": "t", "audioId": "a"})
                sent.append((await api.send("GET", "/api/v1/generate/credit", step="c",
                                            submit=False)).status)
                return sent
            finally:
                await api.aclose()

        assert await main() == [200, 200]
        assert [e["path"] for e in srv.log] == ["/api/v1/generate/credit"] * 2
