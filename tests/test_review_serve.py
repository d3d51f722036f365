"""`imgbuild review --serve`, driven by a real headless Chromium (Debian's `chromium`, through
Playwright's ``executable_path``: no browser is downloaded) and by raw HTTP requests.

The server runs as a user starts it, in a subprocess, on the game example built with the
placeholder. The browser tests skip only outside CI when chromium or Playwright is missing; with
CI=true they run or fail. A screenshot of the page is kept in tests/artifacts/review-page.png.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Project
from reviewkit import built_game, game, read_page  # noqa: F401 - fixtures

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("IMGBUILD_TEST_CHROMIUM", "/usr/bin/chromium")


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/TOKEN/
    port: int
    token: str
    out: str = ""  # what it printed after its URL, once stopped

    def request(self, method: str, path: str, *, host: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One raw request: the path is sent exactly as given (no client-side normalising)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host if host is not None else f"127.0.0.1:{self.port}")
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.out, err = self.proc.communicate()
        return self.proc.returncode, err


def serve(project: Project, *args: str) -> Served:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "review", "--serve", "--provider", "placeholder",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=project.env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints its URL once it listens
    match = re.search(r"http://127\.0\.0\.1:(\d+)/([A-Za-z0-9_-]+)/", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"no URL in {line!r}: {proc.communicate()[1]}")
    return Served(proc, match.group(0), int(match.group(1)), match.group(2))


@pytest.fixture
def served(game: Project) -> Iterator[Served]:
    server = serve(game)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared(built_game: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Served]]:
    """One server for the tests that only knock at its door (and check that nothing changed)."""
    base = tmp_path_factory.mktemp("shared")
    copy = Project(base / "proj", base / "cache")
    shutil.copytree(built_game.root, copy.root, symlinks=True)
    shutil.copytree(built_game.cache, copy.cache, symlinks=True)
    server = serve(copy)
    yield copy, server
    server.stop()


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing}: in CI the browser tests must run (.ci/run installs chromium)")
        pytest.skip(f"{missing}; these browser tests run in CI")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


# Draws an image as the browser decoded it into a canvas, at its own size: the pixels shown.
DRAWN = """img => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  c.getContext("2d").drawImage(img, 0, 0);
  return c.toDataURL("image/png");
}"""


def _distance(shown: bytes, original: Path) -> float:
    """Mean difference per channel (0-255) between the pixels shown and the file scaled to their size."""
    from PIL import Image, ImageChops, ImageStat

    seen = Image.open(io.BytesIO(shown)).convert("RGBA")
    truth = Image.open(original).convert("RGBA").resize(seen.size, Image.Resampling.BILINEAR)
    return sum(ImageStat.Stat(ImageChops.difference(seen, truth)).mean) / 4


def test_each_card_shows_the_image_of_its_output(game: Project, served: Served, tab: Any) -> None:
    tab.goto(served.url)
    lock = game.lock()["targets"]
    assert sorted(tab.eval_on_selector_all("article.card", "cs => cs.map(c => c.dataset.target)")) == sorted(lock)
    _load_every_image(tab)
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "review-page.png"), full_page=True)
    for name, entry in lock.items():
        first = entry["outputs"][0]["path"]
        img = tab.locator(f'article[data-target="{name}"] figure.output img').first
        shown = base64.b64decode(img.evaluate(DRAWN).split(",", 1)[1])
        other = next(e["outputs"][0]["path"] for n, e in lock.items() if n != name)
        assert _distance(shown, game.root / first) < 4, name
        assert _distance(shown, game.root / other) > 3 * _distance(shown, game.root / first), name


def test_a_card_follows_a_build_in_another_terminal_without_a_reload(game: Project, served: Served,
                                                                      tab: Any) -> None:
    tab.goto(served.url)
    tab.evaluate("window.sameDocument = true")
    before = tab.locator('article[data-target="slime"] figure.output img').get_attribute("data-sha256")
    game.manifest((game.root / "images.toml").read_text().replace("A green slime", "A blue slime"))
    tab.wait_for_function("() => document.querySelector('article[data-target=\"slime\"] .state').textContent == 'changed'")
    assert game.build("--provider", "placeholder").code == 0
    after = game.lock()["targets"]["slime"]["outputs"][0]["sha256"]
    assert after != before
    tab.wait_for_function(f"() => document.querySelector('article[data-target=\"slime\"] figure.output img')"
                          f".dataset.sha256 == '{after}'")
    assert tab.evaluate("window.sameDocument") is True
    assert "prompt" in tab.locator('article[data-target="slime"] section.earlier').inner_text()


def _load_every_image(tab: Any) -> None:
    """Images load lazily, as one scrolls: load them all now, and wait until each is decoded."""
    tab.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    tab.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                          timeout=15_000)


def _files(project: Project) -> dict[str, bytes]:
    return {str(p.relative_to(project.root)): p.read_bytes() for p in sorted(project.root.rglob("*"))
            if p.is_file() and ".imgbuild" not in p.parts}


def test_a_request_without_the_token_gets_403_and_changes_nothing(shared: tuple[Project, Served]) -> None:
    game, served = shared
    before = _files(game)
    pick = b'{"target": "icon-potion", "take": 2}'
    json_type = {"Content-Type": "application/json"}
    for method, path, body in [("GET", "/", None), ("GET", "/api/state", None), ("GET", "/x" + served.token + "/", None),
                               ("GET", "/" + served.token[:-1] + "/", None), ("POST", "/api/pick", pick),
                               ("GET", "/file/assets/sprites/knight.png", None)]:
        status, answer = served.request(method, path, body=body, headers=json_type if body else None)
        assert status == 403, (path, answer)
        assert served.token.encode() not in answer
    assert _files(game) == before
    assert served.request("GET", f"/{served.token}/")[0] == 200  # with it, the page


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}",
                                  ""])
def test_a_foreign_host_header_gets_403_even_with_the_token(shared: tuple[Project, Served], host: str) -> None:
    game, served = shared
    before = _files(game)
    host = host.format(port=served.port)
    assert served.request("GET", f"/{served.token}/", host=host)[0] == 403
    assert served.request("GET", f"/{served.token}/api/state", host=host)[0] == 403
    status, _ = served.request("POST", f"/{served.token}/api/pick", host=host,
                               body=b'{"target": "icon-potion", "take": 2}',
                               headers={"Content-Type": "application/json"})
    assert status == 403
    assert _files(game) == before
    assert served.request("GET", f"/{served.token}/", host=f"localhost:{served.port}")[0] == 200


@pytest.mark.parametrize("path", [
    "file/../../../../../../etc/passwd", "file/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "file//etc/passwd",
    "file/images.toml", "file/images.lock", "file/.imgbuild/history.jsonl", "thumb/../history.jsonl",
    "thumb/../../history.jsonl.webp", "object/../../projects.json", "object/" + "0" * 64,
])
def test_nothing_outside_the_images_the_page_shows_is_served(shared: tuple[Project, Served], path: str) -> None:
    _, served = shared
    status, body = served.request("GET", f"/{served.token}/{path}")
    assert status == 404, body
    assert b"root:" not in body and b"[images" not in body


def test_an_output_replaced_by_a_link_out_of_the_project_is_not_served(game: Project, served: Served,
                                                                       tmp_path: Path) -> None:
    path = f"/{served.token}/file/assets/sprites/slime.png"
    assert served.request("GET", path)[0] == 200
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET")
    (game.root / "assets/sprites/slime.png").unlink()
    (game.root / "assets/sprites/slime.png").symlink_to(secret)
    status, body = served.request("GET", path)
    assert status == 404 and b"SECRET" not in body


def test_the_images_the_page_shows_are_served_with_their_bytes(shared: tuple[Project, Served]) -> None:
    game, served = shared
    status, html = served.request("GET", f"/{served.token}/")
    assert status == 200
    page = read_page(html.decode())
    knight = game.read("assets/sprites/knight.png")
    assert f"/{served.token}/file/assets/sprites/knight.png" in page.links
    assert served.request("GET", f"/{served.token}/file/assets/sprites/knight.png") == (200, knight)
    sha = hashlib.sha256(knight).hexdigest()
    status, thumb = served.request("GET", f"/{served.token}/thumb/{sha}.webp")
    assert status == 200 and thumb[8:12] == b"WEBP"


def test_the_server_listens_on_127_0_0_1_only(shared: tuple[Project, Served]) -> None:
    _, served = shared
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == served.port:
                    listening.append(local.rsplit(":", 1)[0])
    if not listening:
        pytest.skip("no /proc/net/tcp to read the listening address from")
    assert listening == ["0100007F"]  # 127.0.0.1, in the kernel's byte order


def test_ctrl_c_stops_the_server_cleanly(served: Served) -> None:
    started = time.monotonic()
    code, err = served.stop()
    assert code == 0
    assert time.monotonic() - started < 5
    assert err.strip().splitlines() == ["review: stopped"]
    with pytest.raises(OSError):
        served.request("GET", f"/{served.token}/")


def test_a_busy_port_is_one_line_and_exit_1(shared: tuple[Project, Served]) -> None:
    game, served = shared
    result = game.run("review", "--serve", "--port", str(served.port), "--provider", "placeholder", timeout=20)
    assert result.code == 1
    assert result.err.strip().splitlines() == [result.err.strip()]
    assert "--port" in result.err


def test_a_click_on_a_pick_button_does_what_imgbuild_pick_does_without_a_reload(game: Project, served: Served,
                                                                                 tab: Any) -> None:
    takes = [t["sha256"] for t in game.lock()["targets"]["icon-potion"]["takes"]]
    assert len(set(takes)) == 3
    tab.goto(served.url)
    tab.evaluate("window.sameDocument = true")
    card = tab.locator('article[data-target="icon-potion"]')
    assert "3 takes, none picked" in card.locator("section.takes h3").inner_text()

    tab.click('button[data-target="icon-potion"][data-take="2"]')

    tab.wait_for_function("() => document.querySelector('article[data-target=\"icon-potion\"] figure.picked "
                          "button[data-take=\"2\"]') !== null")
    assert "take 2 of 3" in card.locator("section.takes h3").inner_text()
    assert tab.evaluate("window.sameDocument") is True
    assert tab.locator("#message").inner_text() == "picked take 2 of icon-potion"
    entry = game.lock()["targets"]["icon-potion"]
    assert entry["pick"] == 2
    assert hashlib.sha256(game.read("assets/icons/potion.png")).hexdigest() == takes[1] == entry["outputs"][0]["sha256"]
    status = game.run("status", "icon-potion", "--provider", "placeholder").out
    assert "take 2 of 3" in status


def test_a_pick_through_the_server_and_one_by_the_command_leave_the_same_lock(game: Project, served: Served,
                                                                               tmp_path: Path) -> None:
    twin = Project(tmp_path / "twin", game.cache)
    shutil.copytree(game.root, twin.root, symlinks=True)
    assert twin.run("pick", "icon-potion", "3", "--provider", "placeholder").code == 0
    status, answer = served.request("POST", f"/{served.token}/api/pick", body=b'{"target": "icon-potion", "take": 3}',
                                    headers={"Content-Type": "application/json"})
    assert status == 200, answer
    strip = lambda lock: {n: {k: v for k, v in e.items() if k != "built_at"} for n, e in lock["targets"].items()}
    assert strip(game.lock()) == strip(twin.lock())
    assert game.read("assets/icons/potion.png") == twin.read("assets/icons/potion.png")
    served.stop()
    assert served.out.splitlines() == ["picked   icon-potion: take 3 → assets/icons/potion.png"]


@pytest.mark.parametrize("body, said", [
    (b'{"target": "icon-potion", "take": 4}', "icon-potion has 3 takes: pick one of 1 to 3, not 4"),
    (b'{"target": "slime", "take": 1}', "slime has no candidates"),
    (b'{"target": "nope", "take": 1}', "nope"),
    (b'{"target": "icon-potion", "take": "2"}', "a pick is"),
    (b'not json', "a pick is"),
])
def test_a_bad_pick_is_one_line_and_changes_nothing(shared: tuple[Project, Served], body: bytes, said: str) -> None:
    game, served = shared
    before = _files(game)
    status, answer = served.request("POST", f"/{served.token}/api/pick", body=body,
                                    headers={"Content-Type": "application/json"})
    assert status == 400
    error = json.loads(answer)["error"]
    assert said in error and "\n" not in error
    assert _files(game) == before


def test_a_pick_from_another_origin_gets_403(shared: tuple[Project, Served]) -> None:
    game, served = shared
    before = _files(game)
    status, _ = served.request("POST", f"/{served.token}/api/pick", body=b'{"target": "icon-potion", "take": 2}',
                               headers={"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403
    assert _files(game) == before


def test_the_page_on_disk_shows_every_image_with_no_server(game: Project, tab: Any) -> None:
    game.manifest((game.root / "images.toml").read_text().replace("A green slime", "A blue slime"))
    assert game.build("--provider", "placeholder").code == 0  # an earlier image, from the cache
    assert game.run("review", "--provider", "placeholder").code == 0
    tab.goto((game.root / ".imgbuild/review/index.html").as_uri())
    _load_every_image(tab)
    sources = tab.eval_on_selector_all("img", "imgs => imgs.map(i => i.currentSrc)")
    assert len(sources) > len(game.lock()["targets"]) and all(s.startswith("file:") for s in sources)


def test_the_page_on_disk_says_which_command_picks(game: Project, tab: Any) -> None:
    assert game.run("review", "--provider", "placeholder").code == 0
    before = _files(game)
    tab.goto((game.root / ".imgbuild/review/index.html").as_uri())
    tab.click('button[data-target="icon-potion"][data-take="2"]')
    assert "imgbuild pick icon-potion 2" in tab.locator("#message").inner_text()
    assert _files(game) == before


def test_open_hands_the_served_url_to_the_browser(game: Project, tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > "{opened}"\n')
    browser.chmod(0o755)
    game.env["BROWSER"] = str(browser)
    server = serve(game, "--open")
    try:
        deadline = time.monotonic() + 10
        while not (opened.exists() and opened.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text().strip() == server.url
    finally:
        server.stop()


def test_a_broken_manifest_keeps_the_cards_and_says_why_until_it_is_fixed(game: Project, served: Served) -> None:
    def state() -> dict[str, Any]:
        status, body = served.request("GET", f"/{served.token}/api/state")
        assert status == 200
        return json.loads(body)  # type: ignore[no-any-return]

    before = state()
    text = (game.root / "images.toml").read_text()
    game.manifest(text.replace('size = "1024x1024"', 'size = "1000x1000"', 1))
    broken = state()
    assert broken["cards"] == before["cards"]
    assert broken["error"].startswith("images.toml: ") and "1000x1000" in broken["error"]
    game.manifest(text)
    assert state()["error"] == ""
