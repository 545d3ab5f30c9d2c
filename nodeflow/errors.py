"""nodeflow's exceptions: every user-facing failure is one of these.

Messages name the file, the node and the socket where they are known, and say
what to do. The CLI prints them without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """Where a problem is: a graph file, a node in it, a socket of that node."""

    file: str | None = None
    node: str | None = None
    node_type: str | None = None
    socket: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            parts.append(where)
        if self.node:
            node = f"node '{_printable(self.node)}'"
            if self.node_type:
                node += f" ({_printable(self.node_type)})"
            parts.append(node)
        if self.socket:
            parts.append(f"socket '{_printable(self.socket)}'")
        return ", ".join(parts)


def printable(text: str, keep: str = "") -> str:
    """``text`` with control characters escaped (except those in ``keep``): names and values
    from a file must not drive the terminal they are printed on."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)


_printable = printable


def with_hint(message: str, hint: str | None) -> str:
    """A message followed by what to do about it, as two sentences."""
    if not hint:
        return message
    message = message.rstrip()
    stop = "" if message.endswith((".", "!", "?", ":", ";")) else "."
    return f"{message}{stop} {hint}"


class NodeflowError(Exception):
    """Base of every error nodeflow reports to a user."""

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location or Location()
        self.hint = hint

    def __str__(self) -> str:
        where = str(self.location)
        text = with_hint(self.message, self.hint)
        return f"{where}: {text}" if where else text


class UsageError(NodeflowError):
    """The command line or an API call was used wrongly."""


class GraphFileError(NodeflowError):
    """A graph file cannot be read at all (missing, not JSON, no graph inside)."""


@dataclass(frozen=True)
class Problem:
    """One validation finding, located in the graph."""

    code: str
    message: str
    location: Location = field(default_factory=Location)

    def __str__(self) -> str:
        where = str(self.location)
        return f"{where}: {self.message}" if where else self.message

    def to_json(self) -> dict[str, object]:
        loc = self.location
        return {
            "code": self.code,
            "message": self.message,
            "file": loc.file,
            "node": loc.node,
            "node_type": loc.node_type,
            "socket": loc.socket,
            "line": loc.line,
            "column": loc.column,
        }


class GraphInvalid(NodeflowError):
    """A graph failed validation; `problems` lists every finding."""

    def __init__(self, problems: list[Problem], file: str | Path | None = None):
        self.problems = problems
        count = len(problems)
        name = str(file) if file else "the graph"
        super().__init__(f"{name} has {count} problem{'s' if count != 1 else ''}")

    def __str__(self) -> str:
        return "\n".join([self.message + ":"] + [f"  {p}" for p in self.problems])


class NodeInputError(NodeflowError):
    """Raised by node code about one of its inputs; the executor adds the node's location."""

    def __init__(self, socket: str, message: str, *, hint: str | None = None):
        super().__init__(message, location=Location(socket=socket), hint=hint)
        self.socket = socket


class NodeFailed(NodeflowError):
    """A node raised while running. `cause` is the original exception."""

    def __init__(self, message: str, *, location: Location, hint: str | None = None,
                 cause: BaseException | None = None):
        super().__init__(message, location=location, hint=hint)
        self.cause = cause


class Cancelled(NodeflowError):
    """The run was cancelled by the user."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class PluginError(NodeflowError):
    """A node pack could not be loaded, or conflicts with another."""


class ModelError(NodeflowError):
    """A model file is missing, unreadable or not the kind the node expects."""


class RefusedInput(NodeflowError, OSError):
    """A file was refused for safety: a picture format nodeflow does not open, a file that is
    not a regular file, a path outside the folders a graph may read, or one too large.

    It is also an OSError, so code that reports unreadable files reports these the same way.
    """


class NodeflowWarning(UserWarning):
    """Something was skipped but the work goes on (the CLI prints it as ``nodeflow: warning``)."""
