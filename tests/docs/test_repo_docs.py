"""The repository's own documentation: self-contained, links that resolve, no narrated history.

A clone is all a reader has, so nothing may point outside it; every relative link in the
Markdown pages must reach a file (and a heading, when it names one); and comments and docs say
what the code does today, so the phrases that narrate how the work went are refused.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()

TEXT_SUFFIXES = frozenset(
    {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".sh", ".lua", ".tmpl", ".txt"}
)
TEXT_NAMES = frozenset({"Makefile", "run", ".gitignore"})
SKIPPED = frozenset({"requirements.lock"})
"""Pinned package names only: nothing written by us to check."""

OUTSIDE = (
    re.compile(r"\.\./shared\b"),
    re.compile(r"/work/shared\b"),
    re.compile(r"\bDESIGN" + r"\.md\b"),
)
"""References to the design notes kept beside the repository, which a clone does not have."""

HISTORY = (
    re.compile(r"\bsessions? \d", re.IGNORECASE),
    re.compile(r"\bthis session\b", re.IGNORECASE),
    re.compile(r"\bissues? #?\d+", re.IGNORECASE),
    re.compile(r"\bthe issue (asks|says|wants|requires)\b", re.IGNORECASE),
    re.compile(
        r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(st|nd|rd|th))"
        r" rounds?\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(earlier|previous|later) rounds\b", re.IGNORECASE),
    re.compile(r"\bround \d", re.IGNORECASE),
    re.compile(r"\breview (fix|finding)", re.IGNORECASE),
    re.compile(r"\bafter the review\b", re.IGNORECASE),
    re.compile(r"\bos\.urandom showed\b"),
)
"""Phrases that tell how the work went (which session, issue or review round changed what)."""

LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
"""An inline Markdown link's target (images excluded: the docs have none)."""
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def repository_files() -> list[Path]:
    """Tracked files plus new ones not ignored (so a page not yet committed is checked too)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's file list is unknown")
    paths = {ROOT / name for name in out.decode().split("\0") if name}
    return sorted(p for p in paths if p.is_file())


def text_files() -> Iterator[Path]:
    for path in repository_files():
        if path.name in SKIPPED:
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            yield path


def markdown_pages() -> list[Path]:
    return [p for p in repository_files() if p.suffix == ".md"]


def lines_outside_fences(text: str) -> Iterator[tuple[int, str]]:
    inside = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield n, line


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in lines_outside_fences(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m is None:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(page: Path) -> Iterator[tuple[int, str]]:
    for n, line in lines_outside_fences(page.read_text(encoding="utf-8")):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto: ...
                continue
            yield n, target


def test_the_documentation_pages_exist() -> None:
    pages = {p.relative_to(ROOT).as_posix() for p in markdown_pages()}
    assert {"README.md", "docs/architecture.md"} <= pages


def test_nothing_refers_outside_the_repository() -> None:
    found = []
    for path in text_files():
        if path == THIS:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            if any(p.search(line) for p in OUTSIDE):
                found.append(f"{path.relative_to(ROOT)}:{n + 1}: {line.strip()}")
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_every_relative_link_resolves_inside_the_repository() -> None:
    broken = []
    for page in markdown_pages():
        where = page.relative_to(ROOT)
        for n, target in relative_links(page):
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.is_relative_to(ROOT):
                broken.append(f"{where}:{n}: {target} (outside the repository)")
            elif not dest.exists():
                broken.append(f"{where}:{n}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}:{n}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_links_the_architecture_and_every_page_in_docs() -> None:
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for _, t in relative_links(readme)}
    pages = {p for p in markdown_pages() if p.parent == ROOT / "docs"}
    assert ROOT / "docs" / "architecture.md" in pages
    assert not pages - linked, f"docs the README does not link: {sorted(pages - linked)}"


def test_comments_and_docs_do_not_narrate_history() -> None:
    found = []
    for path in text_files():
        if path == THIS:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            for pattern in HISTORY:
                m = pattern.search(line)
                if m:
                    where = f"{path.relative_to(ROOT)}:{n + 1}"
                    found.append(f"{where}: {m.group(0)!r} in {line.strip()}")
    assert not found, "history narrated in code or docs:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Where state lives", "where-state-lives"),
        ("How to add a policy", "how-to-add-a-policy"),
        (
            "Backend calls: our own HTTP/1.1 transport, not aiohttp's client",
            "backend-calls-our-own-http11-transport-not-aiohttps-client",
        ),
        ("`trellis` command", "trellis-command"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
