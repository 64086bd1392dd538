"""One collector of validation problems, so every validator (the training data's, the request's)
names each row and field the same way and stops listing after a limit while still counting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    row: int | None  # a data row or a file line, as the validator numbers them
    field: str | None
    text: str


@dataclass
class Problems:
    limit: int
    kept: list[Problem] = field(default_factory=list)
    count: int = 0

    def add(self, row: int | None, field_name: str | None, text: str) -> None:
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append(Problem(row, field_name, text))

    def __bool__(self) -> bool:
        return self.count > 0

    @property
    def left_out(self) -> int:
        return self.count - len(self.kept)


def kind_of(value: Any) -> str:
    """What a JSON value is, in words, without repeating it (problems never echo the payload)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
