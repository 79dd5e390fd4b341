"""The documentation site builds with every link valid, the README's links resolve, and no user document holds
run dates or implementation internals. Fast (a few seconds): unmarked, so `make test-fast` runs it too."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify
from usercmd import REPO, VENV_BIN, project_files, sh, user_documents

MKDOCS_BUILD = ".venv/bin/mkdocs build --strict"  # as README.md prints it


def copy_project(dest: Path) -> Path:
    """The files a fresh clone holds (no git history: mkdocs reads none), the venv linked as in a scratch clone."""
    for rel in project_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    (dest / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    return dest


def nav_pages() -> list[str]:
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    return [page for entry in nav for page in entry.values()]


def test_the_site_builds_strict_with_every_page_in_its_nav(tmp_path):
    root = copy_project(tmp_path / "medflow")
    sh(MKDOCS_BUILD, root, timeout=300, NO_MKDOCS_2_WARNING="1")
    site = root / "site"
    pages = nav_pages()
    assert sorted(pages) == sorted(p.name for p in (REPO / "docs").glob("*.md")), "a page missing from the nav"
    for page in pages:
        html = site / ("index.html" if page == "index.md" else f"{page.removesuffix('.md')}/index.html")
        assert html.exists(), html
    # The configuration reference includes params.yaml itself, so it cannot drift from the file.
    reference = (site / "configuration/index.html").read_text()
    assert "leakage_auc" in reference and "baseline_margin" in reference


def test_a_broken_link_fails_the_build(tmp_path):
    root = copy_project(tmp_path / "medflow")
    page = root / "docs" / "tuning.md"
    page.write_text(page.read_text() + "\nSee [the gate](gate.md#no-such-heading).\n")
    done = sh(MKDOCS_BUILD, root, timeout=300, check=False, NO_MKDOCS_2_WARNING="1")
    assert done.returncode != 0 and "no-such-heading" in done.stdout + done.stderr


def headings(doc: Path) -> set[str]:
    """The anchors MkDocs gives a page's headings (its default slugify)."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_readme_link_resolves_to_a_file_and_heading():
    readme = REPO / "README.md"
    links = re.findall(r"\]\(([^)\s]+)\)", readme.read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 10, local
    for link in local:
        path, _, anchor = link.partition("#")
        target = (readme.parent / path) if path else readme
        assert target.is_file(), f"README.md links to {link}: no such file"
        if anchor:
            assert anchor in headings(target), f"README.md links to {link}: no such heading"


def test_user_documents_hold_no_run_dates_machine_narratives_or_internals():
    # Timings and their history belong to bench/README.md; module internals change under the user's feet.
    internals = r"sidecar|gc\.freeze|os\._exit|_run_exitfuncs|stat cache|PREFECT__|torch\._C|interpreter lock"
    for doc in user_documents():
        if doc.parent.name == "bench":
            continue
        text = doc.read_text()
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{doc.name}: a date"
        assert not re.search(internals, text), f"{doc.name}: {re.search(internals, text)[0]}"
        assert not re.search(r"\b(make bench|bench/results|the box|2-core)\b", text), f"{doc.name}: benchmark talk"
