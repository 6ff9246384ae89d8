"""Problem types come from one registry, are cased alike and are each documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

import process_apis.errors
import system_apis.errors
from gateway.problems import PROBLEM_TYPES, TYPE_BASE, Slug, problem_body, problem_kind

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "problems.md"
PACKAGES = ("gateway", "system_apis", "process_apis", "experience_apis")


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_the_registry_is_the_slug_type() -> None:
    assert set(get_args(Slug)) == set(PROBLEM_TYPES)
    assert len(get_args(Slug)) == len(PROBLEM_TYPES)


def test_slugs_and_titles_are_consistent() -> None:
    for slug, kind in PROBLEM_TYPES.items():
        assert kind.slug == slug and re.fullmatch(r"[a-z]+(-[a-z]+)*", slug), slug
        assert kind.uri == f"/problems/{slug}"
        # sentence case: a capital first letter, the rest lower case
        assert kind.title == kind.title[0].upper() + kind.title[1:].lower(), kind.title
    titles = [kind.title for kind in PROBLEM_TYPES.values()]
    assert len(titles) == len(set(titles))


def test_every_backend_error_names_a_registered_kind() -> None:
    assert process_apis.errors.NotFound.__mro__  # the process errors are loaded too
    classes = [system_apis.errors.BackendError, *_subclasses(system_apis.errors.BackendError)]
    names = {cls.__name__ for cls in classes}
    assert {"NotFound", "DuplicateCustomer", "StepFailed", "CircuitOpen"} <= names
    for cls in classes:
        slug = cls.problem_type  # type: ignore[attr-defined]
        assert slug in PROBLEM_TYPES, (cls, slug)
        status = PROBLEM_TYPES[slug].status
        assert status is None or status == cls.status, (cls, slug)  # type: ignore[attr-defined]
    # one kind for a missing record, whichever layer finds it missing
    assert process_apis.errors.NotFound.problem_type == "not-found"
    assert system_apis.errors.BackendNotFound.problem_type == "not-found"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 415, 418, 422, 429])
def test_every_status_answers_a_registered_kind(status: int) -> None:
    body = problem_body(status)
    kind = problem_kind(None, status)
    assert body["type"] == kind.uri and body["title"] == kind.title
    assert kind.status in (status, None)


def test_no_type_is_made_outside_the_registry() -> None:
    """A ``type`` URI or a title spelled anywhere else would drift from the registry."""
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "problems.py" or "sandbox" in path.parts:
                continue
            text = path.read_text()
            if TYPE_BASE in text or "trellis.dev" in text or re.search(r"\btype_=", text):
                offenders.append(str(path.relative_to(ROOT)))
            if re.search(r"problem_(response|body)\([^)]*\btitle=", text, re.S):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_each_kind_is_documented_at_its_path() -> None:
    text = DOC.read_text()
    sections = dict(re.findall(r"^## ([a-z-]+)\n\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert list(sections) == list(PROBLEM_TYPES)
    for slug, kind in PROBLEM_TYPES.items():
        status = str(kind.status) if kind.status is not None else "varies"
        head = f"`type: {kind.uri}` · title: {kind.title} · status: {status}"
        assert sections[slug].startswith(head), slug
        assert f"| [`{kind.uri}`](#{slug}) | {kind.title} | {status} |" in text
