"""Rendering the page (Jinja2, server-side, autoescaped): the same templates serve the live
page and the static export; only the way a URL is made differs (`Links`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from runner.review import svg
from runner.review.model import Album, Card

HERE = Path(__file__).parent
ASSETS = HERE / "assets"
ASSET_NAMES = {"review.css": "text/css; charset=utf-8",
               "review.js": "text/javascript; charset=utf-8"}


def _mmss(seconds: Any) -> str:
    s = int(round(float(seconds)))
    return f"{s // 60}:{s % 60:02d}"


ENV = Environment(loader=FileSystemLoader(HERE / "templates"),
                  autoescape=select_autoescape(default=True, default_for_string=True),
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters["mmss"] = _mmss
ENV.filters["num"] = lambda v: f"{float(v):g}"


@dataclass
class Links:
    """How the page names what it links to. Live: absolute paths carrying the token;
    static: relative paths inside the exported folder."""

    token: str | None  # None: a static copy
    wave: Callable[[str], bool]  # whether a waveform exists (or can be made) for a blob

    def _q(self, **params: str) -> str:
        return "?" + urlencode({"t": self.token, **params}) if self.token else ""

    def asset(self, name: str) -> str:
        return f"/assets/{name}{self._q()}" if self.token else f"assets/{name}"

    def blob_url(self, name: str) -> str:
        return f"/blob/{name}{self._q()}" if self.token else f"media/{name}"

    def wave_url(self, name: str) -> str | None:
        if not self.wave(name):
            return None
        png = name[:64] + ".png"
        return f"/wave/{png}{self._q()}" if self.token else f"waves/{png}"

    def out_url(self, rel: str) -> str:
        return f"/out/{quote(rel)}{self._q()}" if self.token else f"album/{quote(rel)}"

    def action(self, name: str) -> str:
        return f"/{name}"

    def page(self, name: str, **params: str) -> str:
        return f"/{name}{self._q(**params)}"


def _context(album: Album, links: Links, **extra: Any) -> dict[str, Any]:
    return {"album": album, "token": links.token, "static": links.token is None,
            "asset": links.asset, "blob_url": links.blob_url, "wave_url": links.wave_url,
            "out_url": links.out_url, "action": links.action, "page": links.page,
            "card_hash": card_hash, **extra}


def card_hash(card: Card) -> str:
    return hashlib.sha1(repr(card).encode()).hexdigest()[:12]


def page(album: Album, links: Links, *, message: str | None = None,
         live: str | None = None) -> str:
    return ENV.get_template("page.html").render(
        _context(album, links, message=message, live=live,
                 graph_svg=Markup(svg.graph(album.nodes)),
                 timeline_svg=Markup(svg.timeline(album.spans))))


def card(album: Album, c: Card, links: Links) -> str:
    return ENV.get_template("card.html").render(_context(album, links, card=c))


def summary(album: Album, links: Links, live: str | None) -> str:
    return ENV.get_template("summary.html").render(_context(album, links, live=live))


def reroll(album: Album, c: Card, links: Links) -> str:
    return ENV.get_template("reroll.html").render(_context(album, links, card=c))


def error(status: int, reason: str, message: str) -> str:
    return ENV.get_template("error.html").render(status=status, reason=reason,
                                                  message=message)


def live(album: Album, links: Links, url: str) -> dict[str, Any]:
    """What the page's script swaps in when the state directory changed."""
    return {"version": album.version,
            "cards": {c.id: card(album, c, links) for c in album.cards},
            "hashes": {c.id: card_hash(c) for c in album.cards},
            "summary": summary(album, links, url),
            "graph": svg.graph(album.nodes), "timeline": svg.timeline(album.spans)}
