"""Small shared aliases; a leaf module that imports nothing from prodml."""

from __future__ import annotations

from os import PathLike
from typing import Any, Literal, TypeAlias

StrPath: TypeAlias = str | PathLike[str]
JSONDict: TypeAlias = dict[str, Any]
Task: TypeAlias = Literal["binary", "multiclass", "regression", "ranking"]
DType: TypeAlias = Literal["int", "float", "string", "bool", "timestamp", "date"]
