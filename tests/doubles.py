"""In-process stand-ins for a service, for engine tests that drive a FakeClock (the HTTP
fakes in runner.fake are what the subprocess tests use)."""

from __future__ import annotations

from runner.providers import Op, Produced, Result


def finished(op: Op, task_id: str, text: str = "la") -> Result:
    """What a finished task gives: lyrics (`text`), or one track with a real file."""
    f = op.workdir / "out.txt"
    f.write_text(f"{op.step} {task_id}")
    if op.type == "lyrics":
        return Result({"texts": [{"title": "x", "text": text}], "text": text, "title": "x",
                       "task_id": task_id})
    track = {"id": task_id + "-0", "task_id": task_id, "title": "t", "duration": 30.0,
             "file": Produced(f)}
    return Result({"tracks": [track], "task_id": task_id, "file": track["file"]})


class Quiet:
    """The provider methods these tests never exercise."""

    reports_first = False

    async def refresh(self, op: Op, task_id: str) -> Result | None:
        return None

    async def credits(self) -> float | None:
        return None

    async def aclose(self) -> None:
        return None
