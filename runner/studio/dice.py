"""The studio's one deterministic random stream: every choice the offline studio makes
(the music of a take, its artwork, the words of a lyric, a title, a style) and every seed
the local provider derives come from here.

:class:`Dice` is sha256 in counter mode keyed by its parts: a stream that depends on
nothing but its key, across processes, machines and Python versions. ``random.Random``
would do, but its algorithms may change between Python versions; the bytes of a take must
not. Never ``random`` or the clock.

The bytes the local provider makes are pinned by these draws: a new draw, a change of
order or of how a draw is read changes every album. Two readings of a draw exist, both
kept for that reason: :meth:`Dice.random` (a float from 56 bits; the composer and the
artwork, through ``uniform``/``randint``/``choice``/``chance``) and :meth:`Dice.index`
(an index from 64 bits modulo n; the texts, through ``pick``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TypeVar

_T = TypeVar("_T")


def digest(value: object) -> str:
    """A seed for ``value`` (JSON-able data, keys sorted; other objects by ``str``): the
    hex sha256 of its canonical JSON. The local provider's seed of a piece."""
    blob = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Dice:
    """Counter-mode sha256: a random stream that depends on nothing but its key.

    The key is the sha256 of ``parts`` joined with the unit separator (so ("ab", "c") and
    ("a", "bc") differ); each draw is the sha256 of the key and a 64-bit counter.
    """

    def __init__(self, *parts: str) -> None:
        self._key = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
        self._counter = 0

    def _block(self) -> bytes:
        self._counter += 1
        return hashlib.sha256(self._key + self._counter.to_bytes(8, "big")).digest()

    def random(self) -> float:
        """A float in [0, 1) from the next draw (its first 56 bits)."""
        return int.from_bytes(self._block()[:7], "big") / float(1 << 56)

    def randint(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def choice(self, items: Sequence[_T]) -> _T:
        return items[int(self.random() * len(items))]

    def chance(self, p: float) -> bool:
        return self.random() < p

    def index(self, n: int) -> int:
        """An index in [0, n) from the next draw (its first 64 bits, modulo n)."""
        return int.from_bytes(self._block()[:8], "big") % n

    def pick(self, items: Sequence[_T]) -> _T:
        return items[self.index(len(items))]
