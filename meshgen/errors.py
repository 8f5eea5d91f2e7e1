"""Diagnostics shared by every pipeline stage.

Every user-facing failure is a MeshgenError carrying the spec location it is about, so the CLI can
print ``file:line:col: error: message`` and exit 2 without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class MeshgenError(Exception):
    """A failure the user can fix; never shown with a traceback."""

    def __init__(self, message: str, location: SourceLocation | None = None) -> None:
        # Diagnostics are one line each: tools and humans read them with grep and in CI logs.
        message = " ".join(message.split())
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return f"{prefix}error: {self.message}"


class SpecError(MeshgenError):
    """The spec is malformed or violates a rule of the spec format."""


class TargetError(MeshgenError):
    """The spec is valid but a target cannot enforce it exactly (fail closed)."""


@dataclass(frozen=True)
class CompileWarning:
    message: str
    location: SourceLocation | None = None

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return f"{prefix}warning: {self.message}"
