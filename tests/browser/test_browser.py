"""The documentation site and the nightly's history page as a reader's browser shows them:
headless Chromium (Debian's `chromium`), driven over DevTools (`chromium.py`). A page fails on a
console error or an uncaught exception, a broken internal link or anchor, an image that did not
load, and (the history page) a chart with nothing drawn in it. Screenshots go to out/browser/.

Run by `tox -e browser` (which .ci/run runs after installing chromium where it is missing);
`tox -e unit` leaves this folder out: a newcomer's quick start needs no browser.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path

import pytest
from chromium import Chromium, executable

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "browser"
#: The committed runs the history page is made of in this test (the issue's list).
RUNS = sorted((ROOT / "benchmarks" / "results" / "cpu-x86_64-2core").glob("*.json.gz")) + sorted(
    (ROOT / "benchmarks" / "baselines" / "cpu").glob("run-*.json.gz")
)

# What a page holds that is broken, read in the page after it loaded.
BROKEN_IMAGES = "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
LINKS = "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
IDS = "Array.from(document.querySelectorAll('[id]')).map(e => e.id)"
EXTERNAL = (
    "Array.from(document.querySelectorAll('script[src], link[href], img[src], iframe[src]'))"
    ".map(e => e.src || e.href).filter(u => !u.startsWith('file:') && !u.startsWith('data:'))"
)
#: Each chart: how many traces have a value to draw, and how many marks plotly put in its SVG.
CHARTS = """Array.from(document.querySelectorAll('div.chart')).map(el => ({
  id: el.closest('[id]') ? el.closest('[id]').id : '?',
  kind: Array.from(el.classList).filter(c => c !== 'chart' && !c.startsWith('js-')).join(' '),
  traces: (el.data || []).filter(t => (t.y || []).some(v => v !== null && v !== undefined)).length,
  marks: el.querySelectorAll('.scatterlayer .point, .scatterlayer .js-line').length,
}))"""


@pytest.fixture(scope="module")
def browser():
    binary = executable()
    if binary is None:
        pytest.fail("no chromium on PATH: apt-get install -y chromium (Debian's package; .ci/run installs it)")
    chromium = Chromium(binary)
    yield chromium
    chromium.close()


@pytest.fixture
def serve():
    """serve(folder) -> the base URL of a local HTTP server of `folder` (stopped after the test)."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def site_problems(browser: Chromium, base: str, screenshots: dict[str, Path] | None = None) -> list[str]:
    """Every page reachable from `base` by internal links, opened in the browser: its console
    errors, its images that did not load, its links to a page that is not there or to an anchor
    the page does not have."""
    problems, seen, queue, anchors = [], set(), deque([base]), {}
    while queue:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        browser.errors.clear()
        browser.open(url)
        page = url.removeprefix(base) or "index"
        problems += [f"{page}: {error}" for error in browser.errors]
        problems += [f"{page}: image not loaded: {src}" for src in browser.evaluate(BROKEN_IMAGES)]
        anchors[url] = set(browser.evaluate(IDS))
        for path, shot in (screenshots or {}).items():
            if page == path:
                browser.screenshot(shot)
        for link in browser.evaluate(LINKS):
            target, _, fragment = link.partition("#")
            if not target.startswith(base):
                continue
            code = status(target)
            if code != 200:
                problems.append(f"{page}: broken link {link} (HTTP {code})")
                continue
            if fragment:
                anchors.setdefault(target, None)
                pending = (page, link, target, urllib.parse.unquote(fragment))
                anchors.setdefault("_pending", []).append(pending)
            if target.endswith("/") or target.endswith(".html"):
                queue.append(target)
    for page, link, target, fragment in anchors.get("_pending", []):
        if fragment not in (anchors.get(target) or set()):
            problems.append(f"{page}: broken anchor {link}")
    return problems


def chart_problems(browser: Chromium) -> list[str]:
    """Charts of the open page with no value to draw or no mark drawn; errors the page reported."""
    problems = list(browser.errors)
    for chart in browser.evaluate(CHARTS):
        if not chart["traces"] or not chart["marks"]:
            problems.append(f"empty chart in {chart['id']} ({chart['kind']}): {chart['traces']} traces with data, "
                            f"{chart['marks']} marks drawn")
    problems += [f"fetched from outside the file: {url}" for url in browser.evaluate(EXTERNAL)]
    return problems


# -- the real pages


def test_the_documentation_site_has_no_console_error_broken_link_or_missing_image(browser, serve, tmp_path):
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    # As .github/workflows/docs.yml publishes it: the history page beside the site (linked from it).
    history = write_history(site / "history" / "index.html")
    assert history.returncode == 0, history.stderr
    shots = {"index": OUT / "docs-index.png", "memory/": OUT / "docs-memory.png"}

    problems = site_problems(browser, serve(site), shots)

    assert problems == []
    # Every page of the nav was reached by following links from the home page.
    pages = {path.parent.relative_to(site).as_posix() for path in site.rglob("index.html")}
    assert {"memory", "trl-releases", "implementations", "nightly", "history"} <= pages
    assert all(shot.stat().st_size > 0 for shot in shots.values())


def write_history(page: Path) -> subprocess.CompletedProcess:
    """`python -m policyload.report history` on the committed runs, as the docs workflow runs it."""
    command = [sys.executable, "-m", "policyload.report", "history", *map(str, RUNS), "--html", str(page),
               "--thresholds", str(ROOT / "benchmarks" / "thresholds.toml")]
    return subprocess.run(command, capture_output=True, text=True)


def test_the_history_page_of_the_committed_runs_draws_every_chart(browser):
    page = ROOT / "out" / "history.html"
    written = write_history(page)
    assert written.returncode == 0, written.stderr
    browser.errors.clear()

    browser.open(page.as_uri(), settle_s=2)
    charts = browser.evaluate(CHARTS)
    problems = chart_problems(browser)
    browser.screenshot(OUT / "history.png")  # from the top (Chromium caps a capture at 16000 px)
    browser.evaluate("document.getElementById('series-1').scrollIntoView()")  # the real-size runs
    browser.screenshot(OUT / "history-real-size.png", full_page=False)

    assert problems == []
    # Pinned by hand from the committed files: 51 tiny cases (NOISE.md), 6 real-size loads, 25 DPO
    # cases each get a latency chart; the 6 real-size loads and 25 DPO cases measured memory.
    kinds = [chart["kind"] for chart in charts]
    assert (kinds.count("latency"), kinds.count("memory")) == (51 + 6 + 25, 6 + 25)


# -- the checks seen failing on planted faults


def test_a_broken_link_a_broken_anchor_and_a_missing_image_are_reported(browser, serve, tmp_path):
    (tmp_path / "index.html").write_text(
        '<link rel="icon" href="data:,"><h1 id="top">x</h1>'
        '<a href="other.html">fine</a> <a href="missing.html">gone</a> '
        '<a href="other.html#nowhere">no such anchor</a> <a href="#top">fine</a><img src="chart.png">'
    )
    (tmp_path / "other.html").write_text('<link rel="icon" href="data:,"><p>other</p>')

    problems = site_problems(browser, serve(tmp_path))

    base = "index"
    assert sorted(re.sub(r"http://127.0.0.1:\d+/", "/", p) for p in problems) == sorted([
        f"{base}: image not loaded: /chart.png",
        f"{base}: broken link /missing.html (HTTP 404)",
        f"{base}: broken anchor /other.html#nowhere",
        f"{base}: network: Failed to load resource: the server responded with a status of 404 (File not found) "
        "/chart.png",
    ])


def test_an_empty_chart_and_a_console_error_are_reported(browser, tmp_path):
    from plotly.offline import get_plotlyjs

    page = tmp_path / "charts.html"
    page.write_text(
        f"<script>{get_plotlyjs()}</script>"
        '<div id="full"><div class="chart latency" id="a"></div></div>'
        '<div id="nulls"><div class="chart latency" id="b"></div></div>'
        '<div id="undrawn"><div class="chart memory"></div></div>'
        "<script>Plotly.newPlot('a', [{x: [1, 2], y: [3, 4]}]);"
        "Plotly.newPlot('b', [{x: [1, 2], y: [null, null]}]); console.error('planted');</script>"
    )
    browser.errors.clear()

    browser.open(page.as_uri())
    problems = chart_problems(browser)

    assert problems == [
        "console.error: planted",
        "empty chart in b (latency): 0 traces with data, 0 marks drawn",
        "empty chart in undrawn (memory): 0 traces with data, 0 marks drawn",
    ]
