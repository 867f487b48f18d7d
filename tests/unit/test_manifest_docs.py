"""docs/modules/ is the config reference users read; it must say what the manifests say."""

from __future__ import annotations

from pathlib import Path

from everkit.framework.definitions import contract_root
from everkit.framework.manifest_docs import page, pages

DOCS = Path(__file__).resolve().parents[2] / "docs" / "modules"


def test_the_committed_pages_are_generated_from_the_manifests() -> None:
    expected = pages(contract_root() / "manifests")
    committed = {p.name: p.read_text(encoding="utf-8") for p in DOCS.glob("*.md")}
    assert committed == expected, (
        "regenerate: python -m everkit.framework.manifest_docs docs/modules"
    )


def test_a_page_lists_keys_with_type_default_and_connections() -> None:
    manifest = {
        "description": "A test module.",
        "config": {
            "limit_A": {"description": "The limit.", "type": "number", "minimum": 0},
            "mode": {"description": "How.", "type": "string", "enum": ["a", "b"], "default": "a"},
            "on": {"description": "Switch.", "type": "boolean", "default": False},
        },
        "provides": {"main": {"interface": "energy", "description": "the node"}},
        "requires": {"child": {"interface": "energy", "min_connections": 1, "max_connections": 4}},
    }
    text = page("PyTest", manifest)
    assert "| `limit_A` | number, ≥ 0 | **required** | The limit. |" in text
    assert "| `mode` | string (`a`, `b`) | `a` | How. |" in text
    assert "| `on` | boolean | `false` | Switch. |" in text
    assert "| `main` | `energy` | the node |" in text
    assert "| `child` | `energy` | 1..4 |" in text
