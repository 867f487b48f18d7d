"""Conformance of everkit's contract files with EVerest's file formats and contracts.

Checked here:

* every project file under interfaces/, types/, errors/, manifests/ and config/ validates against
  our own meta-schemas in schemas/ (and every interface var/argument/result is a valid draft-07
  schema, as EVerest's manager requires);
* every type ``$ref`` and every error reference resolves to a file in this repository;
* when the upstream EVerest reference data is available: our interfaces, types, errors and
  meta-schemas are structurally identical to upstream's (only ``description`` strings may differ),
  our descriptions are written in our own words, and upstream's files validate against our
  meta-schemas.

The upstream data lives outside the repository (``<repo>/../shared/everest``, or the folder named by
``EVERKIT_UPSTREAM_DIR``). On machines without it, the upstream comparisons are skipped; that is
the only skip in this file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = Path(
    os.environ.get("EVERKIT_UPSTREAM_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "everest"
)
HAVE_UPSTREAM = UPSTREAM.is_dir()
NO_UPSTREAM_REASON = (
    f"EVerest upstream reference data not found at {UPSTREAM} "
    "(set EVERKIT_UPSTREAM_DIR to compare against it)"
)

CONTRACT_KINDS = ("interfaces", "types", "errors")
META_SCHEMAS = (
    "config",
    "manifest",
    "interface",
    "type",
    "error-declaration-list",
    "error-object",
)
# Which of our meta-schemas validates the files of each folder.
META_SCHEMA_FOR_KIND = {
    "interfaces": "interface",
    "types": "type",
    "errors": "error-declaration-list",
    "manifests": "manifest",
    "config": "config",
}

# The format EVerest's manager requires for a type reference (config.cpp, uri-reference checker).
TYPE_REF_RE = re.compile(r"^((?:\/[a-zA-Z0-9\-\_]+)+#\/[a-zA-Z0-9\-\_]+)$")
ERROR_REF_RE = re.compile(r"^/errors/(?P<ns>[a-z][a-zA-Z0-9_]*)(?:#/(?P<name>[A-Z][A-Za-z0-9]*))?$")

# Descriptions with at least this many words must not be copied verbatim from upstream.
MIN_WORDS_FOR_COPY_CHECK = 4


# --------------------------------------------------------------------------- helpers


@cache
def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def yaml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def upstream_files(kind: str) -> list[Path]:
    if kind == "schemas":
        return [UPSTREAM / "schemas" / f"{name}.yaml" for name in META_SCHEMAS]
    if kind == "manifests":
        return sorted((UPSTREAM / "modules").glob("*/manifest.yaml"))
    return yaml_files(UPSTREAM / kind)


def meta_schema(name: str) -> dict[str, Any]:
    schema = load_yaml(REPO / "schemas" / f"{name}.yaml")
    assert isinstance(schema, dict), f"schemas/{name}.yaml is not a mapping"
    return schema


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator = Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def strip_descriptions(node: Any) -> Any:
    """Drop every string-valued ``description`` key (documentation), keep everything else.

    A ``description`` whose value is not a string (for example a type property that happens to
    be called "description") is structure and is kept.
    """
    if isinstance(node, dict):
        return {
            k: strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def descriptions(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Yield (path, text) for every string-valued ``description`` key."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                yield path, v
            else:
                yield from descriptions(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from descriptions(v, (*path, i))


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def first_difference(ours: Any, theirs: Any, path: str = "") -> str | None:
    """Describe the first place where two stripped documents differ (for readable failures)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            where = f"{path}/{key}"
            if key not in ours:
                return f"{where}: missing in our file"
            if key not in theirs:
                return f"{where}: not present upstream"
            diff = first_difference(ours[key], theirs[key], where)
            if diff:
                return diff
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            diff = first_difference(a, b, f"{path}/{i}")
            if diff:
                return diff
        return None
    if ours != theirs or type(ours) is not type(theirs):
        return f"{path or '<root>'}: ours={ours!r} upstream={theirs!r}"
    return None


def refs(node: Any) -> Iterator[str]:
    """Yield every string ``$ref`` value in a document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def interface_schemas(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield (where, schema) for every var, cmd argument and cmd result of an interface."""
    for cmd_name, cmd in (doc.get("cmds") or {}).items():
        for arg_name, arg in (cmd.get("arguments") or {}).items():
            yield f"cmds/{cmd_name}/arguments/{arg_name}", arg
        if "result" in cmd:
            yield f"cmds/{cmd_name}/result", cmd["result"]
    for var_name, var in (doc.get("vars") or {}).items():
        yield f"vars/{var_name}", var


# --------------------------------------------------------------------------- parameter lists


def project_file_params() -> list[Any]:
    params = []
    for kind in META_SCHEMA_FOR_KIND:
        for path in yaml_files(REPO / kind):
            params.append(pytest.param(kind, path, id=f"{kind}/{path.stem}"))
    return params


def stem_params(paths: list[Path]) -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in paths]


def upstream_stem_params(kind: str) -> list[Any]:
    """Upstream file stems of one kind; a single clearly-skipped entry when upstream is absent."""
    if not HAVE_UPSTREAM:
        return [
            pytest.param(None, id="upstream-absent", marks=pytest.mark.skip(NO_UPSTREAM_REASON))
        ]
    if kind == "manifests":
        return [pytest.param(p, id=p.parent.name) for p in upstream_files(kind)]
    return stem_params(upstream_files(kind))


def our_counterpart(kind: str, upstream_path: Path) -> Path:
    return REPO / kind / upstream_path.name


# --------------------------------------------------------------------------- (a) project files


@pytest.mark.parametrize("name", META_SCHEMAS)
def test_meta_schema_is_valid_draft07_schema(name: str) -> None:
    Draft7Validator.check_schema(meta_schema(name))


@pytest.mark.parametrize(("kind", "path"), project_file_params())
def test_project_file_validates_against_our_meta_schema(kind: str, path: Path) -> None:
    errors = schema_errors(meta_schema(META_SCHEMA_FOR_KIND[kind]), load_yaml(path))
    assert not errors, (
        f"{kind}/{path.name} violates schemas/{META_SCHEMA_FOR_KIND[kind]}.yaml:\n"
        + ("\n".join(errors))
    )


@pytest.mark.parametrize("path", stem_params(yaml_files(REPO / "interfaces")))
def test_interface_schemas_are_valid_draft07(path: Path) -> None:
    draft07 = Draft7Validator(Draft7Validator.META_SCHEMA)
    problems = [
        f"{where}: {e.message}"
        for where, schema in interface_schemas(load_yaml(path))
        for e in draft07.iter_errors(schema)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=f"{kind}/{p.stem}")
        for kind in ("interfaces", "types")
        for p in yaml_files(REPO / kind)
    ],
)
def test_type_refs_resolve_to_our_types(path: Path) -> None:
    problems = []
    for ref in refs(load_yaml(path)):
        if ref.startswith("#"):  # local JSON pointer inside the same document
            continue
        if not TYPE_REF_RE.match(ref):
            problems.append(f"{ref}: not of the form /<file>#/<Type>")
            continue
        file_part, type_name = ref.split("#/")
        type_file = REPO / "types" / f"{file_part.lstrip('/')}.yaml"
        if not type_file.is_file():
            problems.append(f"{ref}: types/{type_file.name} does not exist")
            continue
        if type_name not in (load_yaml(type_file).get("types") or {}):
            problems.append(f"{ref}: types/{type_file.name} defines no type {type_name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", stem_params(yaml_files(REPO / "interfaces")))
def test_error_references_resolve_to_our_errors(path: Path) -> None:
    problems = []
    for entry in load_yaml(path).get("errors") or []:
        match = ERROR_REF_RE.match(entry["reference"])
        if not match:
            problems.append(f"{entry['reference']}: not of the form /errors/<ns>[#/<Name>]")
            continue
        error_file = REPO / "errors" / f"{match['ns']}.yaml"
        if not error_file.is_file():
            problems.append(f"{entry['reference']}: errors/{error_file.name} does not exist")
            continue
        names = [e["name"] for e in load_yaml(error_file).get("errors") or []]
        if match["name"] and match["name"] not in names:
            problems.append(f"{entry['reference']}: errors/{error_file.name} has no such error")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", stem_params(yaml_files(REPO / "errors")))
def test_error_names_are_unique_within_namespace(path: Path) -> None:
    names = [e["name"] for e in load_yaml(path).get("errors") or []]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"duplicate error names: {duplicates}"


# --------------------------------------------------------------------------- (b, c) upstream


def assert_matches_upstream_structure(ours_path: Path, upstream_path: Path) -> None:
    assert ours_path.is_file(), (
        f"missing {ours_path.relative_to(REPO)} (upstream has {upstream_path})"
    )
    ours = strip_descriptions(load_yaml(ours_path))
    theirs = strip_descriptions(load_yaml(upstream_path))
    assert ours == theirs, (
        f"{ours_path.relative_to(REPO)} differs structurally from upstream: "
        f"{first_difference(ours, theirs)}"
    )


def assert_descriptions_are_our_own(ours_path: Path, upstream_path: Path) -> None:
    assert ours_path.is_file(), f"missing {ours_path.relative_to(REPO)}"
    ours = dict(descriptions(load_yaml(ours_path)))
    copied = [
        "/".join(map(str, path)) or "<root>"
        for path, text in descriptions(load_yaml(upstream_path))
        if len(text.split()) >= MIN_WORDS_FOR_COPY_CHECK
        and path in ours
        and normalise(ours[path]) == normalise(text)
    ]
    assert not copied, f"descriptions copied verbatim from upstream at: {copied}"


@pytest.mark.parametrize("upstream_path", upstream_stem_params("interfaces"))
def test_interface_matches_upstream_structure(upstream_path: Path) -> None:
    assert_matches_upstream_structure(our_counterpart("interfaces", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("types"))
def test_type_matches_upstream_structure(upstream_path: Path) -> None:
    assert_matches_upstream_structure(our_counterpart("types", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("errors"))
def test_error_file_matches_upstream_structure(upstream_path: Path) -> None:
    assert_matches_upstream_structure(our_counterpart("errors", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("schemas"))
def test_meta_schema_matches_upstream_structure(upstream_path: Path) -> None:
    assert_matches_upstream_structure(our_counterpart("schemas", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("interfaces"))
def test_interface_descriptions_are_our_own(upstream_path: Path) -> None:
    assert_descriptions_are_our_own(our_counterpart("interfaces", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("types"))
def test_type_descriptions_are_our_own(upstream_path: Path) -> None:
    assert_descriptions_are_our_own(our_counterpart("types", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("errors"))
def test_error_descriptions_are_our_own(upstream_path: Path) -> None:
    assert_descriptions_are_our_own(our_counterpart("errors", upstream_path), upstream_path)


@pytest.mark.parametrize("upstream_path", upstream_stem_params("schemas"))
def test_meta_schema_descriptions_are_our_own(upstream_path: Path) -> None:
    assert_descriptions_are_our_own(our_counterpart("schemas", upstream_path), upstream_path)


# --------------------------------------------------------------------------- (d) faithfulness


@pytest.mark.parametrize("upstream_path", upstream_stem_params("interfaces"))
def test_upstream_interface_validates_against_our_meta_schema(upstream_path: Path) -> None:
    assert not schema_errors(meta_schema("interface"), load_yaml(upstream_path))


@pytest.mark.parametrize("upstream_path", upstream_stem_params("types"))
def test_upstream_type_validates_against_our_meta_schema(upstream_path: Path) -> None:
    assert not schema_errors(meta_schema("type"), load_yaml(upstream_path))


@pytest.mark.parametrize("upstream_path", upstream_stem_params("errors"))
def test_upstream_error_file_validates_against_our_meta_schema(upstream_path: Path) -> None:
    assert not schema_errors(meta_schema("error-declaration-list"), load_yaml(upstream_path))


@pytest.mark.parametrize("upstream_path", upstream_stem_params("manifests"))
def test_upstream_manifest_validates_against_our_meta_schema(upstream_path: Path) -> None:
    assert not schema_errors(meta_schema("manifest"), load_yaml(upstream_path))


@pytest.mark.parametrize("upstream_path", upstream_stem_params("config"))
def test_upstream_config_validates_against_our_meta_schema(upstream_path: Path) -> None:
    assert not schema_errors(meta_schema("config"), load_yaml(upstream_path))
