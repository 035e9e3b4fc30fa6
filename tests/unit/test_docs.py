"""The README stays short and its links land; the command reference is the CLI's own help.

(`mkdocs build --strict` in scripts/test checks every page's links and anchors.)
"""

from __future__ import annotations

import re
from pathlib import Path

from distil.cli.reference import markdown

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_reference_page_is_what_the_cli_prints() -> None:
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert page == markdown(), "regenerate it: python -m distil.cli.reference > docs/reference.md"


def test_the_readme_is_short_and_every_local_link_names_a_file_that_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links to the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


def test_every_docs_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", config, re.MULTILINE))
    assert pages == listed
