"""The report page in a real browser: headless Chromium loads it, a probe script (added to a copy
of the page, never to the report itself) records every console error, script error and failed
resource and measures every plot; then a screenshot. Skipped where no Chromium/Chrome is on PATH
(``apt-get install chromium`` on Debian)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from jqodi.app.report import build_report
from test_html_report import assert_self_contained, make_eval_dir, make_run_dir

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason=f"no headless browser on PATH (looked for {', '.join(BROWSERS)}; "
                                                        "on Debian: apt-get install chromium)")
TIMEOUT_S = 120  # a loaded 2-core machine starts Chromium slowly

PROBE = """<script>
window.__errors = [];
const _err = console.error.bind(console);
console.error = (...a) => { window.__errors.push('console.error: ' + a.join(' ')); _err(...a); };
window.addEventListener('error', e => {
  const t = e.target && e.target !== window ? (e.target.tagName + ' ' + (e.target.src || e.target.href || '')) : '';
  window.__errors.push(t ? 'failed to load: ' + t : 'script error: ' + e.message);
}, true);
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('svg.chart, img')].map(el => {
    const r = el.getBoundingClientRect();
    return {tag: el.tagName, title: (el.querySelector('title') || {}).textContent || el.alt || '',
            w: r.width, h: r.height, drawn: el.tagName === 'IMG' ? el.naturalWidth : el.querySelectorAll('polyline,rect,circle,polygon').length};
  });
  const pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({errors: window.__errors, plots: plots, svgs: document.querySelectorAll('svg').length});
  document.body.appendChild(pre);
});
</script>"""


def _browser(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Run the browser headless in its own process group; on a timeout the whole group is killed
    (by its id), so no renderer outlives the test."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{BROWSER} did not finish within {TIMEOUT_S} s")
    finally:
        try:  # helpers the browser left behind in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_the_page_loads_without_errors_and_every_plot_renders(tmp_path):
    make_eval_dir(tmp_path / "results" / "eval")
    make_run_dir(tmp_path / "results" / "run")
    page = build_report(tmp_path / "results")
    html = page.read_text()
    assert_self_contained(html)
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1))

    dom = _browser(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<pre id="__probe">(.*?)</pre>', dom.stdout, flags=re.S)
    assert m, "the probe did not run: " + dom.stdout[-500:]
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                       .replace("&amp;", "&"))
    assert probe["errors"] == []
    assert "Uncaught" not in dom.stderr
    n_svg = html.count("<svg")
    assert probe["svgs"] == n_svg and len(probe["plots"]) == n_svg >= 12
    for plot in probe["plots"]:
        assert plot["w"] > 100 and plot["h"] > 100 and plot["drawn"] > 0, plot

    shot = tmp_path / "page.png"
    res = _browser(["--hide-scrollbars", "--window-size=1320,6000", f"--screenshot={shot}", page.as_uri()],
                   tmp_path / "profile2")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1320, 6000)
        colours = im.convert("RGB").resize((132, 600)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20  # not a blank page
