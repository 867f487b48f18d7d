"""Hypothesis strategies that generate values from self-contained JSON schemas.

Covers the keywords our contract uses (type, enum, properties, required,
additionalProperties, items, min/maxItems, minimum/maximum, min/maxLength, pattern, local
$ref). ``format`` is ignored, as the runtime validator ignores it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MAX_DEPTH = 6
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    root = root if root is not None else schema
    if "$ref" in schema:  # draft-07: siblings of $ref are ignored
        return from_schema(_resolve(schema["$ref"], root), root, depth + 1)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, root, depth) for k in kind])
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        items = schema.get("items", {})
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", max(low, 3 if depth < MAX_DEPTH else low))
        if high == 0:  # also where recursive types (energy trees) stop
            return st.just([])
        element = from_schema(items, root, depth + 1) if items else st.none()
        return st.lists(element, min_size=low, max_size=high)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: schema.get("minLength", 0) <= len(s) <= schema.get("maxLength", 10**6)
            )
        return st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
            min_size=schema.get("minLength", 0),
            max_size=min(schema.get("maxLength", 12), 12),
        )
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        return st.floats(
            schema.get("minimum"),
            schema.get("maximum"),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.one_of(st.none(), st.booleans(), st.integers(), _TEXT)


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    properties: dict[str, Any] = schema.get("properties", {})
    required = [name for name in schema.get("required", []) if name in properties]
    optional = [name for name in properties if name not in required]
    if depth >= MAX_DEPTH:
        optional = []
    fixed = {name: from_schema(properties[name], root, depth + 1) for name in required}
    extra = {name: from_schema(properties[name], root, depth + 1) for name in optional}
    return st.fixed_dictionaries(fixed, optional=extra)


def wrong_value_for(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A value that cannot satisfy ``schema`` (used to mutate generated values)."""
    while "$ref" in schema:
        schema = _resolve(schema["$ref"], root)
    if "enum" in schema:
        return "not-a-member-of-the-enum"
    kind = schema.get("type")
    if kind in ("number", "integer"):
        return "not a number"
    if kind == "string":
        return 12345
    if kind == "boolean":
        return "yes"
    if kind == "array":
        return {"not": "an array"}
    if kind == "object":
        return ["not", "an", "object"]
    if kind == "null":
        return 0
    return None
