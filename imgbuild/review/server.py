"""`imgbuild review --serve`: the review page on 127.0.0.1, with pick buttons and live cards.

Safe by construction rather than by filtering:

- It listens on 127.0.0.1 only, and every request must carry the token made for this run as the
  first segment of its path, and a ``Host`` header naming 127.0.0.1 or localhost at this port (a
  page elsewhere that rebinds its own name to 127.0.0.1 sends its own name): anything else gets
  403 before anything is read or done.
- No path from a request ever reaches the filesystem. The page's images are served from tables
  made when the page is: project path → file (the outputs and inputs of targets, each confined to
  the project after resolving links), digest → cache object, digest → thumbnail. A name not in
  them is 404.
- A pick is a POST with a JSON body (a cross-site form cannot send one without the browser's
  preflight, which this server never answers), and does what ``imgbuild pick`` does, through
  ``Project.pick``.

The cards refresh by polling: ``api/state`` answers each card's fingerprint, computed again only
when the manifest, the lock, its journal, the build history or a target's file changed.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import ImgbuildError, one_line
from ..fsutil import is_inside
from ..journal import FILE as JOURNAL_FILE
from . import model, page, thumbs
from .history import HISTORY_FILE

if TYPE_CHECKING:
    from ..project import Project
    from .model import Say

POLL_MS = 1000
SHA256 = re.compile(r"[0-9a-f]{64}")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Review:
    """What the server shows, made again when the project's files change."""

    def __init__(self, project: Project, load: Callable[[], Project], manifest: Path, prefix: str) -> None:
        self.project = project
        self.load = load
        self.manifest = manifest
        self.links = page.ServedLinks(prefix)
        self.mutex = threading.RLock()
        self.signature: tuple[Any, ...] | None = None
        self.error = ""
        self.order: list[str] = []
        self.cards: dict[str, str] = {}  # name → card HTML
        self.fps: dict[str, str] = {}
        self.summary = ""
        self.files: dict[str, Path] = {}  # what /file/<rel> may serve
        self.objects: dict[str, Path] = {}  # what /object/<sha256> may serve
        self.thumbs: set[str] = set()
        self._cards: list[model.Card] = []
        self._have: dict[str, bool] = {}  # sha256 → whether its thumbnail exists
        self._fresh = True  # the project given was just loaded

    def _watched(self) -> list[Path]:
        p = self.project
        files = [self.manifest, p.lock.path, p.state_dir / JOURNAL_FILE, p.state_dir / HISTORY_FILE]
        for t in p.targets.values():
            files.extend(p.root / rel for rel in (*t.outputs, *t.inputs))
        return files

    def _signature(self) -> tuple[Any, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._watched():
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def refresh(self, *, force: bool = False) -> None:
        with self.mutex:
            signature = self._signature()
            if signature == self.signature and not force:
                return
            if not self._fresh:
                try:
                    self.project = self.load()
                except (ImgbuildError, OSError) as exc:  # a manifest half edited: keep the cards, say why
                    self.error = one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    self.signature = signature
                    return
                signature = self._signature()  # the targets (and so the files watched) may differ now
            self._fresh = False
            self.error = ""
            self.signature = signature
            self._render(model.cards(self.project))

    def _render(self, cards: list[model.Card]) -> None:
        page_dir = self.project.state_dir / page.PAGE_DIR
        self.project._ensure_state_dir()  # checked to be the project's, with its .gitignore
        have = thumbs.ensure(page_dir, ((s.sha256, s.source) for c in cards for s in c.shown()))
        root = os.path.realpath(self.project.root)
        files, objects = {}, {}
        for card in cards:
            for shown in card.shown():
                if shown.rel is not None:
                    real = os.path.realpath(self.project.root / shown.rel)
                    if is_inside(real, root):  # an output linked out of the project is not served
                        files[shown.rel] = Path(real)
                else:
                    objects[shown.sha256] = shown.source
        self.files, self.objects = files, objects
        self.thumbs = {sha for sha, ok in have.items() if ok}
        self.order = [c.name for c in cards]
        self.cards = {c.name: page.card_html(c, self.links, have) for c in cards}
        self.fps = {name: _fingerprint(html) for name, html in self.cards.items()}
        self.summary = page.summary_text(cards)
        self._have = have
        self._cards = cards

    def page(self) -> str:
        with self.mutex:
            served = {"api": f"{self.links.prefix}/api", "poll_ms": POLL_MS}
            return page.page_html(self._cards, self.links, self._have, title=self.project.root.name, served=served)

    def state(self) -> dict[str, Any]:
        with self.mutex:
            return {"cards": {n: self.fps[n] for n in self.order}, "summary": self.summary, "error": self.error}

    def pick(self, name: str, take: int) -> dict[str, Any]:
        """What ``imgbuild pick NAME TAKE`` does, on the project as it is now on disk. Not under
        the mutex: a pick waits for a build in progress (the run lock), and the cards go on
        following that build meanwhile."""
        project = self.load()
        project.pick(name, take)
        with self.mutex:
            self.project, self._fresh = project, True
            self.refresh(force=True)
            return {"html": self.cards.get(name, ""), "message": f"picked take {take} of {name}",
                    "path": project.targets[name].outputs[0]}


def _fingerprint(html: str) -> str:
    match = re.search(r'data-fp="([0-9a-f]+)"', html)
    return match.group(1) if match else ""


def _image_type(body: bytes) -> str:
    head = body[:12]
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the terminal shows picks, not every poll

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", headers.pop("cache", "no-store"))
        for key, value in {**SECURITY_HEADERS, **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _refuse(self, status: int = HTTPStatus.FORBIDDEN, why: str = "forbidden") -> None:
        self._send(status, f"{why}\n".encode(), "text/plain; charset=utf-8")

    def _allowed(self) -> str | None:
        """The path after the token, or None (403 sent) for a foreign Host or a missing token."""
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.server.hosts:
            self._refuse(why="forbidden: this server answers only to 127.0.0.1 and localhost")
            return None
        path = urlsplit(self.path).path
        head, _, rest = path.lstrip("/").partition("/")
        if not hmac.compare_digest(head.encode(), self.server.token.encode()):
            self._refuse(why="forbidden: the URL lacks this run's token; use the one `imgbuild review --serve` printed")
            return None
        if path == f"/{head}":  # the token without its slash: relative links need it
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/{head}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return "/" + rest

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        rest = self._allowed()
        if rest is None:
            return
        review = self.server.review
        if rest == "/":
            review.refresh()
            self._send(HTTPStatus.OK, review.page().encode(), "text/html; charset=utf-8",
                       **{"Content-Security-Policy": CSP})
        elif rest == "/api/state":
            review.refresh()
            self._json(HTTPStatus.OK, review.state())
        elif rest.startswith("/api/card/"):
            review.refresh()
            html = review.cards.get(unquote(rest[len("/api/card/"):]))
            if html is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such target"})
            else:
                self._json(HTTPStatus.OK, {"html": html})
        elif rest.startswith("/thumb/") and rest.endswith(".webp"):
            sha = rest[len("/thumb/"):-len(".webp")]
            ok = sha in review.thumbs and SHA256.fullmatch(sha)
            self._file(review.project.state_dir / page.PAGE_DIR / thumbs.rel_path(sha) if ok else None, "image/webp")
        elif rest.startswith("/object/"):
            self._file(review.objects.get(rest[len("/object/"):]))
        elif rest.startswith("/file/"):
            self._file(review.files.get(unquote(rest[len("/file/"):])), confined_to=review.project.root)
        else:
            self._refuse(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET  # noqa: N815

    def _file(self, path: Path | None, content_type: str | None = None, *, confined_to: Path | None = None) -> None:
        if path is not None and confined_to is not None:
            # Again now: the file may have become a link out of the project since the page was made.
            real = os.path.realpath(path)
            path = Path(real) if is_inside(real, os.path.realpath(confined_to)) else None
        if path is None:
            self._refuse(HTTPStatus.NOT_FOUND, "not found: not an image this page shows")
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                body = f.read()
            kind = content_type or _image_type(body)
        except OSError:
            self._refuse(HTTPStatus.NOT_FOUND, "not found")
            return
        self._send(HTTPStatus.OK, body, kind)

    def do_POST(self) -> None:  # noqa: N802
        rest = self._allowed()
        if rest is None:
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() not in self.server.hosts:
            self._refuse(why="forbidden: a pick comes only from the review page itself")
            return
        if rest != "/api/pick":
            self._refuse(HTTPStatus.NOT_FOUND, "not found")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "a pick is a JSON body"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(min(length, 4096)) or b"{}")
            name, take = body["target"], body["take"]
            if not isinstance(name, str) or not isinstance(take, int) or isinstance(take, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": 'a pick is {"target": NAME, "take": K}'})
            return
        try:
            answer = self.server.review.pick(name, take)
        except ImgbuildError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(str(exc))})
            return
        self.server.say({"event": "picked", "target": name, "take": take, "path": answer["path"]},
                        f"picked   {name}: take {take} → {answer['path']}")
        self._json(HTTPStatus.OK, answer)


CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a second server on the same port is an error, not a silent share

    say: Say

    def __init__(self, port: int, review_of: Callable[[str], Review]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.port = self.server_address[1]
        self.token = secrets.token_urlsafe(24)
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.review = review_of(f"/{self.token}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"


def serve(project: Project, load: Callable[[], Project], manifest: Path, say: Say, *, port: int = 0,
          open_browser: bool = False) -> int:
    """Serve until Ctrl-C; returns the exit code."""
    try:
        server = ReviewServer(port, lambda prefix: Review(project, load, manifest, prefix))
        server.say = say
    except OSError as exc:
        raise ImgbuildError(f"review: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                            "choose another port with --port, or leave it out for a free one") from None
    try:
        server.review.refresh()
        say({"event": "serving", "url": server.url},
            f"review: serving {server.url} (only on this machine; Ctrl-C stops it)")
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("review: stopped", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0
