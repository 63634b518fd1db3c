"""The graph and the timeline as SVG made here (no script, no fonts or files from
elsewhere). Every state is written as a word beside its colour, and the critical path and
the waits have their own patterns and labels, so both read without colour."""

from __future__ import annotations

from xml.sax.saxutils import escape

from runner.review.model import Node, Span

# state -> (fill, stroke, the word shown); shapes differ too (dashed = not done yet)
STATES = {
    "done": ("#d9f2dd", "#1e7a34", "done"),
    "cached": ("#e8eef7", "#4a6a92", "cached"),
    "running": ("#fff3cd", "#9a6b00", "running"),
    "failed": ("#f8d7da", "#a61b29", "FAILED"),
    "to run": ("#ffffff", "#6b6b6b", "to run"),
    "skipped": ("#f1f1f1", "#8a8a8a", "skipped"),
}
NODE_W, NODE_H, GAP_X, GAP_Y = 190, 44, 46, 14


def _esc(s: str) -> str:
    return escape(s, {'"': "&quot;"})


def graph(nodes: list[Node]) -> str:
    """Left to right by depth (the longest chain of dependencies before a node)."""
    if not nodes:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" role="img" ' \
               'aria-label="no steps"></svg>'
    depth: dict[str, int] = {}
    for n in nodes:  # nodes come in a topological order
        depth[n.id] = 1 + max((depth.get(d, -1) for d in n.deps), default=-1)
    cols: dict[int, list[Node]] = {}
    for n in nodes:
        cols.setdefault(depth[n.id], []).append(n)
    pos: dict[str, tuple[float, float]] = {}
    for c, ns in cols.items():
        for r, n in enumerate(ns):
            pos[n.id] = (10 + c * (NODE_W + GAP_X), 10 + r * (NODE_H + GAP_Y))
    width = 20 + len(cols) * (NODE_W + GAP_X) - GAP_X
    height = 20 + max(len(ns) for ns in cols.values()) * (NODE_H + GAP_Y) - GAP_Y
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-labelledby="graph-title"><title id="graph-title">The steps of the recipe '
           f'and their state</title>',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="#777"/></marker></defs>']
    for n in nodes:
        x2, y2 = pos[n.id]
        for d in n.deps:
            if d not in pos:
                continue
            x1, y1 = pos[d]
            xa, ya, xb, yb = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            mid = (xa + xb) / 2
            out.append(f'<path d="M{xa},{ya} C{mid},{ya} {mid},{yb} {xb - 2},{yb}" '
                       'fill="none" stroke="#999" stroke-width="1.2" '
                       'marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = pos[n.id]
        fill, stroke, word = STATES.get(n.state, STATES["to run"])
        dash = ' stroke-dasharray="5 3"' if n.state in ("to run", "running", "skipped") else ""
        width_ = 3 if n.state == "failed" else 1.5
        label = n.label if len(n.label) <= 28 else n.label[:27] + "…"
        out.append(f'<g class="node state-{n.state.replace(" ", "-")}">'
                   f'<title>{_esc(n.label)}: {word}</title>'
                   f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" '
                   f'fill="{fill}" stroke="{stroke}" stroke-width="{width_}"{dash}/>'
                   f'<text x="{x + 8}" y="{y + 18}" font-size="12" fill="#111">'
                   f'{_esc(label)}</text>'
                   f'<text x="{x + 8}" y="{y + 35}" font-size="11" fill="{stroke}" '
                   f'font-weight="bold">{_esc(word)}</text></g>')
    out.append("</svg>")
    return "".join(out)


LANE_H, LABEL_W, PX_MIN = 22, 200, 640


def timeline(spans: list[Span]) -> str:
    """One lane per instance of the last run: waiting for a place (grey), waiting for the
    rate limit (hatched orange), at the service (blue, lighter after the first take),
    fetching the files (green); the critical path outlined and starred."""
    if not spans:
        return '<p class="empty">No run has recorded its times yet: run the recipe ' \
               '(`sunoflow run`) and the timeline of that run appears here.</p>'
    end = max(s.done for s in spans) or 1.0
    width = LABEL_W + PX_MIN + 60
    scale = PX_MIN / end
    top = 30
    height = top + len(spans) * LANE_H + 40

    def x(t: float) -> float:
        return round(LABEL_W + t * scale, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           'aria-labelledby="tl-title"><title id="tl-title">Timeline of the last run: one '
           'row per step instance</title>',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde2bf"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#c26a00" stroke-width="2.5"/>'
           '</pattern></defs>']
    for tick in _ticks(end):
        out.append(f'<line x1="{x(tick)}" y1="{top - 6}" x2="{x(tick)}" '
                   f'y2="{height - 40}" stroke="#e3e3e3"/>'
                   f'<text x="{x(tick)}" y="{top - 10}" font-size="10" text-anchor="middle" '
                   f'fill="#555">{tick:g} s</text>')
    for row, s in enumerate(spans):
        y = top + row * LANE_H
        star = "★ " if s.critical else ""
        bold = ' font-weight="bold"' if s.critical else ""
        out.append(f'<text x="4" y="{y + 15}" font-size="11" fill="#111"{bold}>'
                   f'{_esc(star + s.id)}</text>')
        segs: list[tuple[float, float | None, str, str]] = []
        if s.remote:
            start_submit = s.intent if s.intent is not None else s.queued
            segs.append((s.queued, start_submit, "#d6d6d6", "waiting for a place"))
            sent = s.sent if s.sent is not None else start_submit
            segs.append((start_submit, sent, "url(#hatch)", "rate-limit wait"))
            segs.append((sent, s.submitted, "#9bb7d4", "submitting"))
            at_service_end = s.finished if s.finished is not None else s.done
            if s.first is not None:
                segs.append((s.submitted or sent, s.first, "#2f5d8a", "at the service"))
                segs.append((s.first, at_service_end, "#6f96bf", "first take ready"))
            else:
                segs.append((s.submitted or sent, at_service_end, "#2f5d8a", "at the service"))
            segs.append((at_service_end, s.done, "#3f9a55", "fetching files"))
        else:
            fin = s.finished if s.finished is not None else s.done
            began = s.started if s.started is not None else s.queued
            segs.append((s.queued, began, "#d6d6d6", "waiting for a place"))
            segs.append((began, fin, "#8c8c8c", "local work"))
            segs.append((fin, s.done, "#3f9a55", "storing files"))
        for a, b, fill, what in segs:
            if b is None or b <= a:
                continue
            out.append(f'<rect x="{x(a)}" y="{y + 4}" width="{max(1.0, x(b) - x(a))}" '
                       f'height="{LANE_H - 8}" fill="{fill}"><title>{_esc(s.id)}: {what} '
                       f'{a:.1f}–{b:.1f} s</title></rect>')
        if s.critical:
            out.append(f'<rect x="{x(s.queued) - 1}" y="{y + 2}" '
                       f'width="{x(s.done) - x(s.queued) + 2}" height="{LANE_H - 4}" '
                       'fill="none" stroke="#a61b29" stroke-width="2"/>')
        if s.running:
            out.append(f'<rect x="{x(s.queued)}" y="{y + 3}" width="{x(s.done) - x(s.queued)}" '
                       f'height="{LANE_H - 6}" fill="none" stroke="#9a6b00" '
                       'stroke-dasharray="4 2"/>')
        out.append(f'<text x="{x(s.done) + 4}" y="{y + 15}" font-size="10" fill="#555">'
                   f'{s.done - s.queued:.1f} s{" so far, running" if s.running else ""}'
                   '</text>')
    ly = height - 22
    legend = [("#d6d6d6", "waiting for a place"), ("url(#hatch)", "rate-limit wait"),
              ("#2f5d8a", "at the service"), ("#6f96bf", "after the first take"),
              ("#3f9a55", "fetching files"), ("#8c8c8c", "local work")]
    lx = 4
    for fill, what in legend:
        out.append(f'<rect x="{lx}" y="{ly}" width="14" height="10" fill="{fill}" '
                   f'stroke="#555" stroke-width=".5"/><text x="{lx + 18}" y="{ly + 9}" '
                   f'font-size="10">{what}</text>')
        lx += 26 + 6 * len(what)
    out.append(f'<rect x="{lx}" y="{ly}" width="14" height="10" fill="none" '
               f'stroke="#a61b29" stroke-width="2"/><text x="{lx + 18}" y="{ly + 9}" '
               'font-size="10">★ critical path</text>')
    out.append("</svg>")
    return "".join(out)


def _ticks(end: float) -> list[float]:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if end / step <= 10:
            break
    n = int(end / step) + 1
    return [round(i * step, 3) for i in range(n + 1)]
