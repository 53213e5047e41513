"""Draw the pictures of a report in docs/img/ from the shipped sweep in tests/data/runs.

    .venv/bin/python docs/gen_images.py      # or: make docs-images

``mlcli report tests/data/runs --plots DIR`` draws every plot; the best configuration's learning
curves become docs/img/report_curves.png (the README's and the Report page's picture).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PICTURES = {"curves_01.png": "report_curves.png"}


def main() -> None:
    with tempfile.TemporaryDirectory() as plots:
        command = [sys.executable, "-m", "mlcli", "report", "tests/data/runs", "--plots", plots]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        for name, target in PICTURES.items():
            shutil.copyfile(Path(plots) / name, ROOT / "docs" / "img" / target)
            print(f"wrote docs/img/{target}")


if __name__ == "__main__":
    main()
