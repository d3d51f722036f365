"""What the review tests share: the game example built once, a copy per test, and a reader of the
page's cards."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import ROOT, Project

GAME = ROOT / "examples" / "game-assets"
NOT_COMMITTED = shutil.ignore_patterns("assets", "build", "images.lock", ".imgbuild")
PAGE = ".imgbuild/review/index.html"


@pytest.fixture(scope="module")
def built_game(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The game example built once with the placeholder; each test gets a copy (with its cache)."""
    base = tmp_path_factory.mktemp("game")
    built = Project(base / "proj", base / "cache")
    shutil.copytree(GAME, built.root, ignore=NOT_COMMITTED)
    assert built.build("--provider", "placeholder").code == 0
    return built


@pytest.fixture
def game(built_game: Project, tmp_path: Path) -> Project:
    copy = Project(tmp_path / "proj", tmp_path / "cache")
    shutil.copytree(built_game.root, copy.root, symlinks=True)
    shutil.copytree(built_game.cache, copy.cache, symlinks=True)
    return copy


class PageReader(HTMLParser):
    """The cards of a page: each one's text, images and buttons, and every link (href, src)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.cards: dict[str, dict[str, list]] = {}  # type: ignore[type-arg]
        self._card: dict[str, list] | None = None  # type: ignore[type-arg]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "article" and "card" in (a.get("class") or ""):
            self._card = {"text": [], "imgs": [], "buttons": []}
            self.cards[str(a["data-target"])] = self._card
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(str(a[key]))
        if self._card is not None and tag in ("img", "button"):
            self._card[tag + "s"].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._card = None

    def handle_data(self, data: str) -> None:
        if self._card is not None:
            self._card["text"].append(data)

    def text(self, name: str) -> str:
        return " ".join(self.cards[name]["text"])

    def shas(self, name: str) -> list[str]:
        return [str(img["data-sha256"]) for img in self.cards[name]["imgs"]]


def read_page(html: str) -> PageReader:
    reader = PageReader()
    reader.feed(html)
    return reader
