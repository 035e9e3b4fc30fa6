"""Read calibration and evaluation text: plain lines, JSONL or CSV with named columns.

``builtin`` names the small sets we wrote for demos and tests (``build/data/``); anything else is a
path. Nothing here invents text: an empty or unreadable file is an error, never a fallback.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from distil.errors import ConfigError

BUILTIN = "builtin"
DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_CALIBRATION = DATA_DIR / "calibration.txt"
BUILTIN_EVAL = DATA_DIR / "eval.jsonl"


@dataclass(frozen=True)
class TextSet:
    """Texts in file order, with labels when the file has them."""

    source: str
    texts: tuple[str, ...]
    labels: tuple[str, ...] | None = None


def resolve(spec: str | Path, builtin: Path) -> Path:
    return builtin if str(spec) == BUILTIN else Path(spec).expanduser()


def load(spec: str | Path, builtin: Path, text_column: str = "text", label_column: str = "label") -> TextSet:
    """Load a text set; labels are read when every row has ``label_column``."""
    path = resolve(spec, builtin)
    if not path.is_file():
        raise ConfigError(f"text data {spec}: no such file (use a .txt, .jsonl or .csv file, or 'builtin').")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"text data {path} is not UTF-8 (byte offset {exc.start}).") from None

    suffix = path.suffix.lower()
    rows: list[dict[str, object]]
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number} is not valid JSON: {exc.msg}.") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{number} must be a JSON object with a {text_column!r} field.")
            rows.append(row)
    elif suffix == ".csv":
        reader = csv.DictReader(raw.splitlines())
        if reader.fieldnames is None or text_column not in reader.fieldnames:
            raise ConfigError(
                f"{path} has no {text_column!r} column (columns: {reader.fieldnames}); use --text-column."
            )
        rows = [dict(row) for row in reader]
    else:
        rows = [{text_column: line} for line in raw.splitlines() if line.strip()]

    texts = []
    for number, row in enumerate(rows, start=1):
        value = row.get(text_column)
        if not isinstance(value, str):
            raise ConfigError(f"{path}: row {number} has no text in {text_column!r}; use --text-column.")
        if value.strip():
            texts.append(value)
    if not texts:
        raise ConfigError(f"{path} holds no text.")
    labels = None
    if rows and all(isinstance(row.get(label_column), (str, int)) for row in rows):
        labels = tuple(str(row[label_column]) for row in rows if str(row.get(text_column, "")).strip())
    return TextSet(str(path), tuple(texts), labels)
