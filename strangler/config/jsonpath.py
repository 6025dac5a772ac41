"""JSONPath for `shadow.compare.ignore_fields`: the only module that imports jsonpath_ng.

An expression is checked when the config is read (its error is a config problem) and, when
answers are compared, tells which concrete fields of a document it selects.
"""

from __future__ import annotations

from typing import Any

from jsonpath_ng import DatumInContext, Fields, Index
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as _parse

# A field of a JSON document, from its root: keys and list indices, e.g. ("orders", 0, "total").
ConcretePath = tuple[str | int, ...]


class FieldSelector:
    """One compiled JSONPath expression."""

    __slots__ = ("text", "_expression")

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._expression = _parse(text)
        except (JSONPathError, ValueError, TypeError, AttributeError, IndexError) as error:
            # The parser raises its own error for most mistakes, and plain ones for a few.
            raise ValueError(f"invalid JSONPath '{text}': {error}") from None

    def select(self, document: Any) -> set[ConcretePath]:
        """The concrete paths of the fields this expression selects in `document`."""
        try:
            found = self._expression.find(document)
        except Exception:  # noqa: BLE001 - a filter that cannot apply to this document selects nothing
            return set()
        return {path for datum in found if (path := _concrete(datum)) is not None}


def _concrete(datum: DatumInContext) -> ConcretePath | None:
    steps: list[str | int] = []
    while datum is not None:
        step = datum.path
        if isinstance(step, Fields) and len(step.fields) == 1:
            steps.append(step.fields[0])
        elif isinstance(step, Index) and len(step.indices) == 1:
            index = step.indices[0]
            parent = datum.context.value if datum.context is not None else None
            if index < 0 and isinstance(parent, list):
                index += len(parent)        # $.items[-1]: the last element, by its position
            steps.append(index)
        elif type(step).__name__ not in ("Root", "This"):
            return None      # a step without a single field or index (an extension's value): nothing to leave out
        datum = datum.context
    return tuple(reversed(steps))
