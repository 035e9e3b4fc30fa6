"""``python -m distil.monitoring [CHART_DIR]``: write the chart's generated rule files."""

from __future__ import annotations

import sys
from pathlib import Path

from distil.monitoring.series import chart_files


def main(argv: list[str]) -> None:
    chart = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "helm" / "distil"
    for name, text in chart_files().items():
        path = chart / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
