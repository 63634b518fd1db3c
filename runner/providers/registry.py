"""The providers by kind: `create(config)` makes the one a recipe names.

Each provider's module is imported only when its kind is asked for, so the `local`
provider needs no HTTP stack (and the HTTP providers no ffmpeg).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.providers.base import Provider
from runner.recipe.model import Provider as ProviderConfig


def _local() -> Callable[..., Provider]:
    from runner.providers.local import LocalProvider

    return LocalProvider


def _sunoapi() -> Callable[..., Provider]:
    from runner.providers.sunoapi import SunoApiProvider

    return SunoApiProvider


def _newapi() -> Callable[..., Provider]:
    from runner.providers.newapi import NewApiProvider

    return NewApiProvider


# kind -> its provider class, imported on first use.
KINDS: dict[str, Callable[[], Callable[..., Provider]]] = {
    "local": _local, "sunoapi": _sunoapi, "newapi": _newapi,
}


def create(config: ProviderConfig, *, env: dict[str, str], **kw: Any) -> Provider:
    """The provider for `config.kind`. The local provider takes its config only (no key,
    no service); a remote one also the environment (its key) and `kw` (clock, uploads)."""
    load = KINDS.get(config.kind)
    if load is None:
        raise ValueError(config.kind)
    if config.kind == "local":
        return load()(config)
    return load()(config, env=env, **kw)
