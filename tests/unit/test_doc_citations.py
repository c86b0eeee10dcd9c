"""Citations of the project's documents stay true: every ``docs/<file>.md §N`` in the sources
names a document in ``docs/`` and a section that document has, and each document's own
``§N`` references name its own sections. The documents are in the repository; a citation of
one that is not (the shared notes the code once cited) fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

# Where citations may be: the package (its code and data), tests, benchmarks, CI, jobs,
# sample data and the top-level files, and the documents themselves.
SOURCE_ROOTS = ("batchrun", "tests", "bench", ".ci", "jobs", "sample_data", "docs")
TOP_FILES = ("README.md", "pyproject.toml")
SUFFIXES = {".py", ".toml", ".md", ".txt", ".cfg", ".ini", ""}

# A section number, and a citation: `docs/api-facts.md §7.1`, `§7.1-7.2` (a range),
# `§11.1 and §12.1`, `§3, §4`.
NUMBER = r"\d+(?:\.\d+)*"
REF = rf"§{NUMBER}(?:\s*-\s*{NUMBER})?"
CITATION = re.compile(rf"docs/([\w.-]+\.md)\s+({REF}(?:(?:\s*,\s*|\s+and\s+){REF})*)")
HEADING = re.compile(rf"^#{{2,6}}\s+({NUMBER})\.?\s", re.MULTILINE)
# A § reference inside a document that no document name comes before: its own section.
OWN_REF = re.compile(rf"(?<![\w.])(?<!\.md )({REF})")
# The notes the code cited before docs/ existed; they are not in the repository.
RETIRED_NAMES = re.compile(r"\bDESIGN §|\bAPI-FACTS\b")


def sections(document: Path) -> set[str]:
    """The numbers of a document's numbered headings (``## 3.`` and ``### 3.1`` give 3, 3.1)."""
    return set(HEADING.findall(document.read_text(encoding="utf-8")))


def numbers(refs: str) -> Iterator[str]:
    """Every section number a reference names: both ends of a range."""
    yield from re.findall(NUMBER, refs)


def source_files() -> Iterator[Path]:
    for name in TOP_FILES:
        yield REPO / name
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            parts = path.relative_to(REPO).parts
            if any(part.startswith(".") or part == "__pycache__" for part in parts[1:]):
                continue
            if path.is_file() and path.suffix in SUFFIXES and path != Path(__file__).resolve():
                yield path


def citations() -> list[tuple[str, str, str]]:
    """(where, document, section) for every section every source cites."""
    found = []
    for path in source_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a data file, not text
            continue
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(REPO)}:{line}"
            for number in numbers(match.group(2)):
                found.append((where, match.group(1), number))
    return found


def test_the_documents_are_numbered() -> None:
    for name in ("design.md", "api-facts.md"):
        assert len(sections(DOCS / name)) >= 10, f"docs/{name} has lost its numbered sections"


def test_every_citation_names_a_document_and_a_section_it_has() -> None:
    found = citations()
    assert len(found) > 40, "the scan found too few citations: is the pattern still right?"
    known = {path.name: sections(path) for path in DOCS.glob("*.md")}
    wrong = [
        f"{where}: docs/{document} §{number}" + ("" if document in known else " (no such document)")
        for where, document, number in found
        if number not in known.get(document, set())
    ]
    assert not wrong, "citations of sections that do not exist:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", ["design.md", "api-facts.md"])
def test_a_documents_own_references_name_its_sections(name: str) -> None:
    document = DOCS / name
    text = document.read_text(encoding="utf-8")
    own = sections(document)
    wrong = sorted(
        {
            f"docs/{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(1)}"
            for match in OWN_REF.finditer(text)
            for number in numbers(match.group(1))
            if number not in own
        }
    )
    assert not wrong, "references to sections this document does not have:\n" + "\n".join(wrong)


def test_no_citation_of_the_notes_outside_the_repository() -> None:
    stale = []
    for path in source_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in RETIRED_NAMES.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            stale.append(f"{path.relative_to(REPO)}:{line}: {match.group(0)}")
    assert not stale, "cite docs/design.md or docs/api-facts.md instead:\n" + "\n".join(stale)
