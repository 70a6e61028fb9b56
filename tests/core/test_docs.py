"""The user documentation holds together: links resolve, Python snippets compile, the README example runs.

Each adapter's page in docs/ is also its package README (its PyPI page), so it must be the same text and hold
no relative link (those are dead on PyPI).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ADAPTER_PAGES = {"lightning": "lightning.md", "hf": "hf.md", "keras": "keras.md"}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without its fenced code blocks (a `[x](y)` inside code is not a link)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", _prose(page.read_text()), re.M)}


def _relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text())) if not re.match(r"[a-z]+:", t)]


def _python_blocks(page: Path) -> list[str]:
    return [code for lang, code in FENCE.findall(page.read_text()) if lang == "python"]


def test_the_docs_are_there():
    names = {p.name for p in PAGES}
    for want in ("README.md", "guide.md", "guarantees.md", "performance.md", "remote.md", "plugins.md",
                 "layout.md", "lightning.md", "hf.md", "keras.md", "design.md", "api.md"):
        assert want in names, want
    assert len((ROOT / "README.md").read_bytes()) < 9000, "the README is the short entry page; details go to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target} leads nowhere"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: no heading for #{anchor} in {dest.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_snippets_compile(page):
    for i, code in enumerate(_python_blocks(page)):
        compile(code, f"{page.name}[python block {i}]", "exec")


@pytest.mark.parametrize("package", sorted(ADAPTER_PAGES))
def test_adapter_page_is_the_package_readme(package):
    page = ROOT / "docs" / ADAPTER_PAGES[package]
    readme = ROOT / "packages" / package / "README.md"
    assert readme.read_text() == page.read_text(), f"copy {page} to {readme} (it is the package's PyPI page)"
    assert _relative_links(page) == [], "a package README's relative links are dead on PyPI"


def test_core_package_readme_has_no_relative_links():
    assert _relative_links(ROOT / "packages" / "core" / "README.md") == []


def test_readme_first_example_runs(tmp_path):
    code = _python_blocks(ROOT / "README.md")[0]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("COMPLETED"), proc.stdout
    assert "'model.name': 'mlp'" in proc.stdout and "'loss'" in proc.stdout
    assert (tmp_path / ".dash" / "my-project" / "first-run" / "files").is_dir()
