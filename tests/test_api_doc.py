"""docs/api.md is the public API: every name it documents imports from its module, and every name
a documented module exports (__all__) is documented."""

import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
SECTION = re.compile(r"^## `(alae_fast(?:\.\w+)*)`", re.M)
ENTRY = re.compile(r"`(\w+)[^`]*`(?:, )?")  # one of the code spans an entry opens with


def _sections() -> dict[str, str]:
    text = DOC.read_text()
    heads = list(SECTION.finditer(text))
    return {m.group(1): text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            for i, m in enumerate(heads)}


def _documented(body: str) -> set[str]:
    """The names the section's entries open with: "- `a(...)`, `b`: ..." documents a and b."""
    names = set()
    for line in body.splitlines():
        pos = 2 if line.startswith("- ") else len(line)
        while (m := ENTRY.match(line, pos)) is not None:
            names.add(m.group(1))
            pos = m.end()
    return names


SECTIONS = _sections()


def test_the_document_has_every_layer():
    assert {"alae_fast", "alae_fast.ops", "alae_fast.nn", "alae_fast.models", "alae_fast.train", "alae_fast.data",
            "alae_fast.infer", "alae_fast.metrics", "alae_fast.convert", "alae_fast.official"} <= set(SECTIONS)


@pytest.mark.parametrize("module", sorted(SECTIONS))
def test_documented_names_import_and_exports_are_documented(module):
    mod = importlib.import_module(module)
    body = SECTIONS[module]
    exported = set(mod.__all__)
    mentioned = set(re.findall(r"`(\w+)", body))
    assert exported - mentioned == set(), f"{module} exports names docs/api.md does not document"
    # The top-level section lists its names inline: every `name` there is one.
    documented = _documented(body) if module != "alae_fast" else set(re.findall(r"`(\w+)`", body))
    missing = {name for name in documented if not hasattr(mod, name)}
    assert not missing, f"docs/api.md documents names {module} does not have"
    assert documented, module
