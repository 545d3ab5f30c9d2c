"""Socket types: a small, explicit type system for node inputs and outputs.

Compatibility is exact match, declared subtypes (``INT`` is a subtype of
``FLOAT``), unions (``IMAGE | MASK``) and type parameters for generic nodes
(a passthrough whose output type is whatever its input was linked to).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from nodeflow.errors import UsageError

_lock = threading.Lock()
_TYPES: dict[str, SocketType] = {}


class SocketType:
    """A named socket type. Create each once; names are global and unique.

    ``literal`` is the Python type of values that can be typed into the graph
    file (int, float, str, bool); socket types without one only travel along
    links. ``parents`` are the declared supertypes.
    """

    __slots__ = ("name", "parents", "literal", "description", "color", "_ancestors")
    _ancestors: frozenset[str]

    def __init__(
        self,
        name: str,
        *,
        parents: Iterable[SocketType] = (),
        literal: type | None = None,
        description: str = "",
        color: str = "#9e9e9e",
    ) -> None:
        if not name or not name.replace("_", "").isalnum():
            raise UsageError(f"socket type name {name!r} must be letters, digits and underscores")
        self.name = name
        self.parents = tuple(parents)
        self.literal = literal
        self.description = description
        self.color = color
        ancestors: set[str] = {name}
        for parent in self.parents:
            ancestors |= parent.ancestors()
        self._ancestors = frozenset(ancestors)
        with _lock:
            existing = _TYPES.get(name)
            if existing is not None:
                raise UsageError(
                    f"socket type {name!r} is already defined; import the existing one "
                    f"instead of defining it again (or choose another name)")
            _TYPES[name] = self

    def ancestors(self) -> frozenset[str]:
        """Names of this type and every declared supertype."""
        return self._ancestors

    def is_subtype_of(self, other: SocketType) -> bool:
        return other.name in self._ancestors

    def members(self) -> tuple[SocketType, ...]:
        return (self,)

    def __or__(self, other: SocketType | UnionType) -> UnionType:
        return UnionType(*self.members(), *other.members())

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> tuple[Callable[[str], SocketType], tuple[str]]:
        return (socket_type, (self.name,))

    def to_json(self) -> Any:
        return self.name


class UnionType:
    """A value of any of the member types."""

    __slots__ = ("types", "name")

    def __init__(self, *types: SocketType) -> None:
        unique: list[SocketType] = []
        for t in types:
            if t not in unique:
                unique.append(t)
        self.types = tuple(unique)
        self.name = " | ".join(t.name for t in self.types)

    def members(self) -> tuple[SocketType, ...]:
        return self.types

    def __or__(self, other: SocketType | UnionType) -> UnionType:
        return UnionType(*self.types, *other.members())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnionType) and set(self.types) == set(other.types)

    def __hash__(self) -> int:
        return hash(frozenset(self.types))

    def __repr__(self) -> str:
        return self.name

    def to_json(self) -> Any:
        return {"union": [t.name for t in self.types]}


class TypeParam:
    """A type parameter of a generic node: every socket declared with the same
    parameter on one node has the same type, fixed by what the inputs are linked to.
    ``bound`` limits what it may be bound to.
    """

    __slots__ = ("name", "bound")

    def __init__(self, name: str, bound: SocketType | UnionType | None = None) -> None:
        self.name = name
        self.bound = bound

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def to_json(self) -> Any:
        out: dict[str, Any] = {"param": self.name}
        if self.bound is not None:
            out["bound"] = self.bound.to_json()
        return out


TypeSpec = SocketType | UnionType | TypeParam
"""What an input or output may be declared with."""


def is_compatible(source: SocketType | UnionType, target: SocketType | UnionType) -> bool:
    """Can a value of type ``source`` flow into a socket of type ``target``?"""
    targets = target.members()
    return all(any(s.is_subtype_of(t) for t in targets) for s in source.members())


def socket_type(name: str) -> SocketType:
    """The socket type registered under ``name``."""
    try:
        return _TYPES[name]
    except KeyError:
        raise UsageError(f"unknown socket type {name!r}") from None


def all_socket_types() -> list[SocketType]:
    return list(_TYPES.values())


def type_name(spec: TypeSpec) -> str:
    if isinstance(spec, TypeParam):
        return spec.bound.name if spec.bound is not None else "any"
    return spec.name


# Built-in socket types. Colours are the editor's.
FLOAT = SocketType("FLOAT", literal=float, description="A floating-point number.", color="#8bc34a")
INT = SocketType("INT", parents=(FLOAT,), literal=int, description="An integer.", color="#4caf50")
BOOL = SocketType("BOOL", literal=bool, description="True or false.", color="#cddc39")
STRING = SocketType("STRING", literal=str, description="Text.", color="#ffb74d")
IMAGE = SocketType(
    "IMAGE", color="#64b5f6",
    description="A batch of RGB images: float32 numpy array (batch, height, width, 3) in [0, 1].")
MASK = SocketType(
    "MASK", color="#90a4ae",
    description="A batch of masks: float32 numpy array (batch, height, width) in [0, 1]; 1 marks the area to change.")
