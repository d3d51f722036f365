"""`imgbuild review`: write the page, or serve it; the library's way in is :func:`write_page`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import model, page
from .model import Say

if TYPE_CHECKING:
    from ..project import Project


def write_page(project: Project) -> Path:
    """Write ``.imgbuild/review/index.html`` (and the thumbnails it needs) for every target of
    ``project``; returns its path. Builds nothing, requests nothing, changes no lock or output."""
    cards = model.cards(project)
    project._ensure_state_dir()  # the state folder, with its .gitignore, checked to be the project's
    return page.write_static(project.root, project.state_dir, cards, project.root.name)




def review(load: Callable[[], Project], manifest: Path, say: Say, *, serve: bool, port: int,
           open_browser: bool) -> int:
    """The command: ``load`` loads the project (again, for the server, when files change)."""
    project = load()
    if serve:
        from . import server

        return server.serve(project, load, manifest, say, port=port, open_browser=open_browser)
    path = write_page(project)
    shown = path.relative_to(project.root) if path.is_relative_to(project.root) else path
    say({"event": "review", "path": str(path), "targets": len(project.targets)},
        f"review: wrote {shown} ({len(project.targets)} target(s)); open it in a browser, or run "
        "`imgbuild review --open`")
    if open_browser:
        _open(path.resolve().as_uri())
    return 0


def _open(url: str) -> None:
    import webbrowser

    if not webbrowser.open(url):
        print(f"review: no browser found; open {url}", file=sys.stderr)
