"""Open the HTML report in a real headless browser (chromium) and check what it shows.

    apt-get install -y chromium          # Debian's chromium (CI does not have it)
    .venv/bin/python bench/report_html_browser.py [--out screenshot.png]

Writes ``mlcli report tests/data/runs --format html`` to a temporary file, opens it offline
(``file://``, background networking off) in headless chromium, saves a screenshot and checks its
pixels: the page is not blank, the table's text is there (dark pixels in the top band), and the
plots rendered (pixels of the val curve's red and the train curve's blue, which only the embedded
PNGs contain). The DOM chromium built is checked for the table rows and the embedded images.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "tests" / "data" / "runs"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TRAIN_RGB, VAL_RGB = (0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)  # mlcli.report.plots' colours


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run headless chromium with no sandbox, GPU, network chatter or first-run UI."""
    binary = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if binary is None:
        sys.exit("no chromium found: apt-get install -y chromium")
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--hide-scrollbars", f"--user-data-dir={user_dir}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def near(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels within ``tolerance`` of a colour (lines and their anti-aliased edges)."""
    return int((np.abs(pixels[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance).sum())


def main() -> None:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "mlcli-report.png"
    )
    parser.add_argument("--size", default="1400,3200", help="window WIDTH,HEIGHT in pixels")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlcli-browser-") as tmp:
        page = Path(tmp) / "report.html"
        subprocess.run(
            [sys.executable, "-m", "mlcli", "report", str(RUNS), "--format", "html",
             "--out", str(page)],
            check=True, cwd=REPO,
        )  # fmt: skip
        dom = chromium("--dump-dom", page.as_uri(), user_dir=Path(tmp) / "profile-dom")
        shot = chromium(
            f"--window-size={args.size}", f"--screenshot={args.out}", page.as_uri(),
            user_dir=Path(tmp) / "profile-shot",
        )  # fmt: skip
        size_kb = page.stat().st_size / 1024
    if shot.returncode != 0 or not args.out.exists():
        sys.exit(f"chromium failed ({shot.returncode}):\n{shot.stderr[-2000:]}")

    images = re.findall(r'<img [^>]*src="data:image/png;base64,', dom.stdout)
    rows = dom.stdout.count("<tr>")
    pixels = np.asarray(Image.open(args.out).convert("RGB"))
    height, width = pixels.shape[:2]
    not_white = (pixels.min(axis=-1) < 245).mean()
    text_band = (pixels[: height // 8].max(axis=-1) < 90).sum()  # dark text near the top
    train, val = near(pixels, TRAIN_RGB), near(pixels, VAL_RGB)

    print(f"report: {size_kb:.0f} KB html; chromium DOM: {rows} table rows, {len(images)} images")
    print(f"screenshot: {args.out} ({width}×{height})")
    print(f"non-white pixels: {not_white:.1%}; dark text pixels in the top eighth: {text_band}")
    print(f"train-blue pixels: {train}; val-red pixels: {val}")
    checks = {
        "DOM has the tables": rows >= 8,
        "DOM has the embedded plots": len(images) >= 5,
        "page is not blank": not_white > 0.05,
        "table text is drawn": text_band > 2000,
        "plots are drawn": train > 500 and val > 500,
    }
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
