"""The built site opens in a real browser (headless Chromium), figures and all.

Skipped where Debian's `chromium` is not installed (CI installs it). The
link check needs no browser.
"""

import functools
import html
import html.parser
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOUR_FIGURES = {
    "positional_encoding.png",
    "encoder_self_attention.png",
    "encoder_self_attention_layer0.png",
    "decoder_self_attention.png",
    "cross_attention.png",
}
_EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:", "blob:")

# Loads the tour in a same-origin frame and writes, once it has loaded, each
# image's src and decoded width (0 for an image the browser could not show).
# Shows the tour scrolled to the heading named by the URL's fragment (a
# headless screenshot of a page opened at a fragment comes out blank).
_SECTION_PAGE = """<!doctype html><html><body style="margin:0">
<div style="width:1280px;height:1400px;overflow:hidden">
<iframe id="page" src="tour/" scrolling="no"
        style="border:0;width:1280px;height:30000px"></iframe>
</div>
<script>
var frame = document.getElementById("page");
frame.onload = function () {
  var id = decodeURIComponent(location.hash.slice(1));
  var heading = frame.contentDocument.getElementById(id);
  frame.style.marginTop = (20 - heading.getBoundingClientRect().top) + "px";
};
</script></body></html>
"""

_CHECK_PAGE = """<!doctype html><html><body>
<iframe id="tour" src="tour/" width="1200" height="800"></iframe>
<script>
document.getElementById("tour").onload = function () {
  var images = Array.from(this.contentDocument.images);
  var result = images.map(function (i) {
    return [i.getAttribute("src"), i.complete, i.naturalWidth];
  });
  document.body.setAttribute("data-images", JSON.stringify(result));
};
</script></body></html>
"""


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []  # (tag, attribute, value)
        self.images = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append((tag, name, value))
                if tag == "img" and name == "src":
                    self.images.append(value)


def _parse(page):
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _target(site, page, link):
    """The file an internal link of `page` points to, or `None` if external."""
    if link.startswith(_EXTERNAL) or link.startswith("#"):
        return None
    path = urllib.parse.unquote(urllib.parse.urlsplit(link).path)
    if not path:
        return None
    base = site if path.startswith("/") else page.parent
    target = (base / path.lstrip("/")).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target


def test_every_internal_link_and_image_resolves(built_site):
    pages = sorted(built_site.rglob("*.html"))
    assert len(pages) >= 15
    broken = []
    for page in pages:
        for tag, attribute, link in _parse(page).links:
            target = _target(built_site, page, link)
            if target is not None and not target.is_file():
                broken.append(
                    f"{page.relative_to(built_site)}: <{tag} {attribute}={link!r}>"
                )
    assert broken == []
    tour = _parse(built_site / "tour" / "index.html")
    assert {pathlib.PurePosixPath(src).name for src in tour.images} >= TOUR_FIGURES


@pytest.fixture
def server(built_site):
    """The built site served on 127.0.0.1 (a free port) from a thread."""
    (built_site / "_check_images.html").write_text(_CHECK_PAGE, encoding="utf-8")
    (built_site / "_section.html").write_text(_SECTION_PAGE, encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def chromium(url, tmp_path, *arguments, timeout=90):
    """Runs headless Chromium on `url`; returns its stdout."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *arguments,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_tour_renders_its_figures_in_chromium(server, tmp_path):
    # The browser loads the tour and decodes every image.
    dom = chromium(
        f"{server}/_check_images.html",
        tmp_path,
        "--virtual-time-budget=15000",
        "--dump-dom",
    )
    marker = 'data-images="'
    assert marker in dom, dom[-2000:]
    encoded = dom.split(marker, 1)[1].split('"', 1)[0]
    images = json.loads(html.unescape(encoded))
    shown = {
        pathlib.PurePosixPath(src).name: (complete, width)
        for src, complete, width in images
    }
    assert set(shown) >= TOUR_FIGURES
    for name in TOUR_FIGURES:
        complete, width = shown[name]
        assert complete and width > 300, (name, shown[name])
    # The server answers each figure with a PNG.
    for name in TOUR_FIGURES:
        with urllib.request.urlopen(f"{server}/figures/{name}") as response:
            assert response.status == 200
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_tour_screenshot(server, tmp_path):
    keep = os.environ.get("DOCS_SCREENSHOT_DIR")  # to look at the pictures
    folder = pathlib.Path(keep) if keep else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    shots = {
        "tour-top.png": f"{server}/tour/",
        "tour-positional-encoding.png": f"{server}/_section.html#positional-encoding",
    }
    for name, url in shots.items():
        path = folder / name
        chromium(
            url,
            tmp_path,
            "--window-size=1280,1400",
            "--virtual-time-budget=10000",
            f"--screenshot={path}",
        )
        # A rendered page, not a blank one: a blank PNG compresses to ~5 kB.
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 40_000, (name, path.stat().st_size)
