"""The report in a real browser (headless Debian chromium), built from fake posteriors.

Checks that the page loads offline with no console error, no network request and no blocked
request, that every figure decodes (naturalWidth > 0), and that a screenshot is not blank.
Skips cleanly when chromium is absent (scripts/test.sh installs it in CI).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from report_fakes import fake_report_inputs

from bayes_soil.report.html import write_report

CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and os.path.exists(p)
    ),
    None,
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium not installed (apt-get install chromium)"
    ),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]
N_FIGURES = 15  # freq: stocks x2, rates, ratios, segmented x2; posterior: forest x2, fan x2,
# C:N, turning points, rank x2, ppc

# Runs first in <head>: records errors, console.error calls and blocked (CSP) requests, then on
# load writes what it saw, the images' decoded widths and every fetched resource into the DOM.
PROBE = """<script>
window.__probe = {errors: [], console: [], blocked: []};
window.addEventListener('error', function (e) {
  __probe.errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || e));
}, true);
var __ce = console.error;
console.error = function () { __probe.console.push([].slice.call(arguments).join(' '));
  return __ce.apply(console, arguments); };
document.addEventListener('securitypolicyviolation', function (e) {
  __probe.blocked.push(e.blockedURI + ' ' + e.violatedDirective); });
window.addEventListener('load', function () {
  var imgs = [].slice.call(document.images);
  __probe.n_img = imgs.length;
  __probe.undecoded = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                          .map(function (i) { return i.alt; });
  __probe.widths = imgs.map(function (i) { return i.naturalWidth; });
  __probe.resources = performance.getEntriesByType('resource').map(function (r) {
    return r.name; });
  var pre = document.createElement('pre');
  pre.id = 'bs-probe';
  pre.textContent = JSON.stringify(__probe);
  document.body.appendChild(pre);
});
</script>"""


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp)},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(fake_report_inputs(failed_breakpoints=True), out)
    return out


def test_figures_are_inline_pngs(report):
    page = report.read_text(encoding="utf-8")
    imgs = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert len(imgs) == N_FIGURES
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
    assert "could not be drawn" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)


def test_page_loads_offline_with_no_errors_and_every_figure_decodes(report, tmp_path):
    probed = tmp_path / "probed.html"
    page = report.read_text(encoding="utf-8")
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    res = chromium(
        [
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="bs-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, "the probe did not run: " + res.stdout[-500:]
    import html

    probe = json.loads(html.unescape(m.group(1)))
    assert probe["errors"] == [] and probe["console"] == [] and probe["blocked"] == []
    assert probe["n_img"] == N_FIGURES
    assert probe["undecoded"] == []
    assert min(probe["widths"]) > 300
    assert probe["resources"] == []  # nothing fetched: data: URIs only
    # the browser's own log: no console message from the page, no network fetch
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln]
    assert console == []
    assert not re.search(
        r"https?://(?!localhost)",
        "\n".join(ln for ln in res.stderr.splitlines() if "net::" in ln or "Failed to load" in ln),
    )


def test_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "report.png"
    res = chromium([f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (3000, 1200)
    grey = img.mean(axis=2)
    assert grey.std() > 0.05  # text, tables and banners, not a uniform page
    assert (grey < 0.9).mean() > 0.02  # a few per cent of the pixels are ink
    # the red SYNTHETIC / FAILED banners near the top are rendered (reddish pixels)
    top = img[:800]
    red = (top[..., 0] > 0.55) & (top[..., 1] < 0.35) & (top[..., 2] < 0.35)
    assert red.sum() > 500
    keep = os.environ.get("BAYES_SOIL_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
