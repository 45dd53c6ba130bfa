"""The README and docs/ do not rot: every relative link resolves and every source file they
name exists (a module that moves must take its mentions with it)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCE = re.compile(r"\b((?:core|harness|models|analysis|benchmarks|tests|slurm)/"
                    r"[A-Za-z0-9_./-]+\.(?:py|sh|ipynb))\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_named_files_exist(page):
    text = page.read_text()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]
    missing = [t for t in links if not (page.parent / t).exists()]
    current = text.split("## What moved")[0]     # architecture.md's history names old paths
    missing += [p for p in SOURCE.findall(current) if not (ROOT / p).exists()]
    assert missing == []


def test_readme_starts_with_the_two_commands_and_links_every_page():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```")[1].strip().splitlines()
    assert len(first_block) == 3 and first_block[0] == "bash"
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in text, page.name
