"""The page as a person sees it: report.html opened in headless Chromium (Debian's `chromium`).

`render` opens a copy of the page with a small probe script appended (the page itself has no
script) and reads back, after the load event: how many images there are and which did not load,
the visible text (innerText: what a reader sees, not the markup) and where the CV headline sits
relative to the first screen. Without Chromium the calling test skips and says how to get it.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const head = document.querySelector('.headline');
  const box = head ? head.getBoundingClientRect() : null;
  const out = {images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
               text: document.body.innerText, headline: head ? head.innerText : null,
               headline_bottom: box ? box.bottom : null, height: window.innerHeight};
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

# what a reader must never see: JSON punctuation and the kit's internal keys
RAW = ["{", "}", '":', "cv_", "_in_sample", "_nested", "verdicts", "test_accuracy", "valid_metric", "prob_",
       "share_of_true", "best_epoch", "n_folds"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    return exe


def _args(exe: str, tmp: Path, size: tuple[int, int]) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}", f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=10000"]


def render(page: Path, tmp: Path, size: tuple[int, int] = (1280, 900)) -> dict:
    exe = chromium()
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    r = subprocess.run(_args(exe, tmp, size) + ["--dump-dom", probe.as_uri()], capture_output=True,
                       text=True, timeout=180)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, flags=re.S)
    assert m, f"chromium gave no probe output (exit {r.returncode}): {r.stderr[-2000:]}"
    seen = json.loads(html.unescape(m.group(1)))
    seen["text_without_files"] = seen["text"].split("files beside this page")[0]
    return seen


def screenshot(page: Path, png: Path, tmp: Path, size: tuple[int, int] = (1280, 900)) -> Path:
    """The first screen of the page as a PNG."""
    r = subprocess.run(_args(chromium(), tmp, size) + [f"--screenshot={png}", page.as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert png.is_file(), r.stderr[-2000:]
    return png
