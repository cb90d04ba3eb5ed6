"""The documentation's shape (issue 32): a README tour short enough to read in five minutes, the reference parts in
``docs/`` pages it links to, every relative link resolving, and no machine path in any file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "RESULTS.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
#: A developer machine's folder, spelled so that this file does not hold it.
MACHINE_PATH = "/" + "work/"


def test_the_tour_is_short_and_links_the_reference_pages():
    text = (ROOT / "README.md").read_text()
    tour = re.search(r"^## Five-minute tour\n(.*?)^## ", text, re.S | re.M)
    assert tour, "the README has no 'Five-minute tour' section followed by another section"
    assert len(tour.group(1).splitlines()) <= 90
    for page in ("cli", "file-formats", "guarantees", "dataset", "evaluation", "forces-and-relaxation", "metals"):
        assert f"(docs/{page}.md)" in text, f"the README does not link docs/{page}.md"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    path = ROOT / page
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{page} links {target}, which does not exist"


def test_no_machine_path_in_the_repository():
    skip = {".git", ".ruff_cache", ".pytest_cache", "__pycache__"}
    found = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or skip & set(path.relative_to(ROOT).parts) or path.suffix in (".npz", ".gz", ".png"):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if MACHINE_PATH in line]
    assert not found, f"machine paths (use runs/..., ../shared/data/... or BUILD): {found[:20]}"
