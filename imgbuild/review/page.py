"""The review page: HTML of the cards, and where its links point.

One renderer for both pages: the static one (``.imgbuild/review/index.html``, opened from disk:
links are relative paths, and ``file:`` URLs into the cache for takes and earlier images) and the
served one (links under the run's token, which the server maps back to files). Every text from the
project is escaped; the page loads nothing from the network.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from ..fsutil import atomic_write
from . import thumbs
from ._assets import CSS, SCRIPT
from .model import Card, Shown, is_image

PAGE_DIR = "review"  # under the project's .imgbuild/


class Links(Protocol):
    def file(self, rel: str) -> str: ...  # a project file by its path
    def object(self, sha256: str) -> str: ...  # a cache object by its digest
    def thumb(self, sha256: str) -> str: ...


@dataclass(frozen=True)
class StaticLinks:
    """Links of the page on disk: project files relative to its folder, cache objects by the
    absolute ``file:`` URL of the file the cache shows them in (the page opens with no server)."""

    page_dir: Path
    root: Path
    objects: Mapping[str, Path]  # sha256 → the cache's viewable file of it (model.Shown.source)

    def __post_init__(self) -> None:
        # Worked out once: a page of 1,000 targets asks for thousands of links.
        up = Path(os.path.relpath(self.root, self.page_dir)).as_posix()
        object.__setattr__(self, "_up", quote(up))

    def file(self, rel: str) -> str:
        return f"{self._up}/{quote(rel)}"  # type: ignore[attr-defined]

    def object(self, sha256: str) -> str:
        return Path(os.path.abspath(self.objects[sha256])).as_uri()

    def thumb(self, sha256: str) -> str:
        return thumbs.rel_path(sha256)


@dataclass(frozen=True)
class ServedLinks:
    """Links of the served page: every one under ``/<token>/``; the server resolves them."""

    prefix: str  # "/<token>"

    def file(self, rel: str) -> str:
        return f"{self.prefix}/file/{quote(rel)}"

    def object(self, sha256: str) -> str:
        return f"{self.prefix}/object/{sha256}"

    def thumb(self, sha256: str) -> str:
        return f"{self.prefix}/thumb/{sha256}.webp"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _full(shown: Shown, links: Links) -> str:
    return links.file(shown.rel) if shown.rel else links.object(shown.sha256)


def _figure(shown: Shown | None, links: Links, have: dict[str, bool], css: str, alt: str, caption: str,
            extra: str = "") -> str:
    if shown is None:
        return f'<figure class="{css} missing"><div class="none">not on disk nor in the cache</div>' \
               f"<figcaption>{caption}</figcaption>{extra}</figure>"
    src = links.thumb(shown.sha256) if have.get(shown.sha256) else _full(shown, links)
    size = f" · {shown.width}×{shown.height}" if shown.width and shown.height else ""
    return (f'<figure class="{css}"><a href="{_e(_full(shown, links))}" target="_blank">'
            f'<img src="{_e(src)}" alt="{_e(alt)}" loading="lazy" data-sha256="{shown.sha256}"></a>'
            f"<figcaption>{caption}{_e(size)}</figcaption>{extra}</figure>")


def _file_link(shown: Shown | None, links: Links, rel: str) -> str:
    """An output that is no image (a sprite sheet's atlas): a link to it, no picture."""
    if shown is None:
        return f'<figure class="output file missing"><figcaption>{_e(rel)}: not on disk nor in the cache' \
               "</figcaption></figure>"
    return f'<figure class="output file"><figcaption><a href="{_e(_full(shown, links))}" ' \
           f'target="_blank">{_e(rel)}</a></figcaption></figure>'


def card_html(card: Card, links: Links, have: dict[str, bool]) -> str:
    """One target's card. Its fingerprint (data-fp) changes whenever anything on it does."""
    name = _e(card.name)
    parts = [f'<header><h2>{name}</h2><span class="state">{_e(card.state)}</span>'
             f'<span class="reason">{_e(card.reason)}</span></header>']
    outs = [_figure(s, links, have, "output", f"{card.name}: {rel}", _e(rel)) if is_image(rel)
            else _file_link(s, links, rel) for rel, s in card.outputs]
    parts.append(f'<div class="images">{"".join(outs)}</div>')
    if card.takes:
        figures = []
        for k, take in enumerate(card.takes, 1):
            picked = card.pick == k
            label = f"take {k}" + (" · picked" if picked else "")
            button = (f'<button type="button" data-target="{name}" data-take="{k}"'
                      f'{" disabled" if picked else ""}>{"picked" if picked else f"pick take {k}"}</button>')
            figures.append(_figure(take, links, have, "take picked" if picked else "take",
                                   f"{card.name}: take {k}", _e(label), button))
        parts.append(f'<section class="takes"><h3>takes <span class="note">{_e(card.takes_line)}</span></h3>'
                     f'<div class="images">{"".join(figures)}</div></section>')
    params = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in sorted(card.params.items()))
    parts.append(f'<p class="prompt">{_e(card.prompt)}</p><dl class="params">{params}</dl>')
    if card.inputs:
        ins = [_figure(s, links, have, "input", f"input {rel}", _e(rel)) for rel, s in card.inputs]
        parts.append(f'<section class="inputs"><h3>inputs</h3><div class="images">{"".join(ins)}</div></section>')
    meta = []
    if card.cost_usd is not None:
        meta.append(f"${card.cost_usd:.4f}".rstrip("0").rstrip(".") if card.cost_usd else "$0")
    if card.built_at:
        meta.append(f"built {card.built_at}")
    if card.provider:
        meta.append(f"by {card.provider}")
    if meta:
        parts.append(f'<p class="meta">{_e(" · ".join(meta))}</p>')
    if card.earlier:
        rows = []
        for old in card.earlier:
            why = "; ".join(old.changed) or "spec"
            figs = "".join(_figure(s, links, have, "earlier", f"{card.name}: earlier image", _e(f"built {old.built_at}"))
                           for s in old.images)
            rows.append(f'<div class="older" data-spec="{_e(old.spec)}"><p class="changed">{_e(why)}</p>'
                        f'<div class="images">{figs}</div></div>')
        parts.append(f'<section class="earlier"><h3>earlier images, under older specs</h3>{"".join(rows)}</section>')
    body = "".join(parts)
    fp = hashlib.sha256(body.encode()).hexdigest()[:16]
    return (f'<article class="card state-{_e(card.state)}" id="card-{name}" data-target="{name}" data-fp="{fp}">'
            f"{body}</article>")


def summary_text(cards: list[Card]) -> str:
    counts: dict[str, int] = {}
    for c in cards:
        counts[c.state] = counts.get(c.state, 0) + 1
    return f"{len(cards)} target(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def page_html(cards: list[Card], links: Links, have: dict[str, bool], *, title: str,
              served: dict[str, object] | None = None) -> str:
    """The whole page; ``served`` carries the server's API prefix (None for the page on disk)."""
    config = json.dumps(served or {}).replace("</", "<\\/")
    body = "\n".join(card_html(c, links, have) for c in cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'">
<title>{_e(title)}: imgbuild review</title><style>{CSS}</style></head>
<body><header class="top"><h1>{_e(title)}</h1><p class="summary">{_e(summary_text(cards))}</p>
<p id="message" role="status"></p></header>
<main id="cards">
{body}
</main>
<script>const REVIEW = {config};</script><script>{SCRIPT}</script>
</body></html>
"""


def write_static(project_root: Path, state_dir: Path, cards: list[Card], title: str) -> Path:
    """Write ``.imgbuild/review/index.html`` and the thumbnails it needs; returns its path."""
    page_dir = state_dir / PAGE_DIR
    have = thumbs.ensure(page_dir, ((s.sha256, s.source) for c in cards for s in c.shown()))
    cached = {s.sha256: s.source for c in cards for s in c.shown() if s.rel is None}
    links = StaticLinks(page_dir, project_root, cached)
    text = page_html(cards, links, have, title=title)
    path = page_dir / "index.html"
    page_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), durable=False)
    return path

