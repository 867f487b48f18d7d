"""A configuration reference per module, written from its manifest.

    python -m everkit.framework.manifest_docs docs/modules

writes ``docs/modules/<Name>.md`` for every manifest in ``manifests/`` and an index;
tests/unit/test_manifest_docs.py fails when a committed page and its manifest disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from .definitions import contract_root

HEADER = "Generated from `manifests/{name}.yaml` by `python -m everkit.framework.manifest_docs`."


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _type(schema: dict[str, Any]) -> str:
    kind = str(schema.get("type", ""))
    if "enum" in schema:
        kind += " (" + ", ".join(f"`{v}`" for v in schema["enum"]) + ")"
    bounds = [
        f"{word} {schema[key]}"
        for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"))
        if key in schema
    ]
    return kind + (", " + ", ".join(bounds) if bounds else "")


def _default(schema: dict[str, Any]) -> str:
    if "default" not in schema:
        return "**required**"
    value = schema["default"]
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def _config_table(config: dict[str, Any]) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, schema in config.items():
        meaning = _text(schema.get("description")).replace("|", "\\|")
        lines.append(f"| `{key}` | {_type(schema)} | {_default(schema)} | {meaning} |")
    return lines


def page(name: str, manifest: dict[str, Any]) -> str:
    lines = [f"# {name}", "", HEADER.format(name=name), "", _text(manifest.get("description")), ""]
    if manifest.get("config"):
        lines += ["## Module config (`config_module`)", "", *_config_table(manifest["config"]), ""]
    provides = manifest.get("provides") or {}
    if provides:
        lines += ["## Provides", "", "| implementation | interface | description |"]
        lines += ["|---|---|---|"]
        for impl, entry in provides.items():
            description = _text(entry.get("description"))
            lines.append(f"| `{impl}` | `{entry['interface']}` | {description} |")
        lines.append("")
        for impl, entry in provides.items():
            if entry.get("config"):
                lines += [f"### `{impl}` config (`config_implementation.{impl}`)", ""]
                lines += [*_config_table(entry["config"]), ""]
    requires = manifest.get("requires") or {}
    if requires:
        lines += ["## Requires", "", "| requirement | interface | connections |", "|---|---|---|"]
        for req, entry in requires.items():
            low, high = entry.get("min_connections", 1), entry.get("max_connections", 1)
            count = str(low) if low == high else f"{low}..{high}"
            lines.append(f"| `{req}` | `{entry['interface']}` | {count} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def pages(manifest_dir: Path) -> dict[str, str]:
    """File name -> content: one page per manifest and README.md as the index."""
    out: dict[str, str] = {}
    index = ["# Module configuration reference", "", HEADER.format(name="*") + "", ""]
    for path in sorted(manifest_dir.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[f"{path.stem}.md"] = page(path.stem, manifest)
        summary = _text(manifest.get("description")).split(". ")[0].rstrip(".")
        index.append(f"- [{path.stem}]({path.stem}.md): {summary}.")
    out["README.md"] = "\n".join(index) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path("docs/modules")
    target.mkdir(parents=True, exist_ok=True)
    for name, content in pages(contract_root() / "manifests").items():
        (target / name).write_text(content, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
