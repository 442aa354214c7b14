"""The advanced-search filters that the SDK's listings send (`qarnot._filter`): a tree of
`{"operator": "And"|"Or", "filters": [...]}` nodes over `{"operator", "field", "value"}` leaves.

`conn.all_tasks(tags=[a, b])` sends Or(Equal(Tags, a), Equal(Tags, b)): any of the tags;
`tags_intersect=[a, b]` sends And(...): all of them; one tag is a bare Equal leaf.  A leaf on a
list field (Tags) holds when the list contains the value.  Fields are matched against the task's
JSON keys without regard to case (Tags -> tags, State -> state).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from submit.emulator.fields import RequestError

LEAVES = ("Equal", "NotEqual", "In", "NotIn", "Like")


def matches(item: dict[str, Any], node: Any) -> bool:
    """Does the object (its JSON) pass the filter?  None or {} passes everything."""
    if not node:
        return True
    if not isinstance(node, dict):
        raise RequestError(400, f"filter: expected an object, got {type(node).__name__}")
    operator = node.get("operator")
    if operator in ("And", "Or"):
        children = node.get("filters")
        if not isinstance(children, list):
            raise RequestError(400, f"filter: {operator} needs a list of filters")
        results = (matches(item, child) for child in children)
        return all(results) if operator == "And" else any(results)
    if operator not in LEAVES:
        raise RequestError(400, f"filter: operator {operator!r} is not supported by the local emulator "
                                f"(it knows And, Or, {', '.join(LEAVES)})")
    field = node.get("field")
    if not isinstance(field, str):
        raise RequestError(400, f"filter: {operator} needs a field name")
    lowered = {k.lower(): v for k, v in item.items()}
    if field.lower() not in lowered:
        raise RequestError(400, f"filter: unknown field {field!r}")
    have = lowered[field.lower()]
    have = have if isinstance(have, list) else [have]
    value = node.get("value")
    if operator in ("In", "NotIn"):
        wanted = value if isinstance(value, list) else [value]
        found = any(v in have for v in wanted)
        return found if operator == "In" else not found
    if operator == "Like":
        pattern = str(value).replace("%", "*")
        return any(fnmatch.fnmatchcase(str(h), pattern) for h in have)
    return (value in have) if operator == "Equal" else (value not in have)
