"""The build-time baseline of the quality signals, as a Helm values file the chart takes with ``-f``.

``distil build-engines`` gates its precision variants on an evaluation set and knows each label's
share of the served model's predictions there. Written into the chart's ``quality.baseline``, those
shares become the ``distil:class_share:baseline`` series that the ``DistilClassShareShift`` alert
compares live traffic with (``series.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from distil.errors import ConfigError
from distil.monitoring.series import dump

FILE = "quality-baseline.yaml"


def baseline_values(labels: Sequence[str], shares: Sequence[float], source: str) -> dict[str, object]:
    """The chart values carrying each label's share of the predictions on the evaluation set."""
    if len(labels) != len(shares) or not labels:
        raise ConfigError(f"{len(labels)} labels but {len(shares)} class shares: the precision report is inconsistent.")
    return {
        "quality": {
            "baseline": {
                "classShares": {label: round(float(share), 6) for label, share in zip(labels, shares, strict=True)},
                "source": source,
            }
        }
    }


def write(root: Path, labels: Sequence[str], shares: Sequence[float], source: str) -> Path:
    path = root / FILE
    header = (
        "# The served model's class shares on the evaluation set, written by `distil build-engines`.\n"
        "# Pass this file to helm with -f: the DistilClassShareShift alert compares live shares with them.\n"
    )
    path.write_text(header + dump(baseline_values(labels, shares, source)), encoding="utf-8")
    return path
