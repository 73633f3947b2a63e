"""Screenshots of report pages for docs/: the first screen as a reader sees it, in headless Chromium.

    python benchmarks/report_screenshots.py reports/demo/digits-test_resnet/report.html docs/report_demo.png
    python benchmarks/report_screenshots.py reports/<exp>/report.html docs/report_many_classes.png --height 1800

Needs Debian's `chromium` (apt-get install chromium). The PNG is scaled to --width pixels wide.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("page")
    p.add_argument("png")
    p.add_argument("--height", type=int, default=900, help="browser window height in pixels")
    p.add_argument("--width", type=int, default=900, help="width of the saved PNG")
    a = p.parse_args()
    exe = shutil.which("chromium") or shutil.which("google-chrome")
    if not exe:
        sys.exit("error: headless Chromium is not installed (apt-get install chromium)")
    import cv2
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--window-size=1280,{a.height}",
                        f"--screenshot={shot}", Path(a.page).resolve().as_uri()],
                       capture_output=True, timeout=180, check=True)
        img = cv2.imread(str(shot))
    scale = a.width / img.shape[1]
    img = cv2.resize(img, (a.width, round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(a.png, img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{a.png}: {img.shape[1]}x{img.shape[0]}, {Path(a.png).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
