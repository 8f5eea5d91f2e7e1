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


MAX_REPORTED_ERRORS = 20


class SpecErrors(SpecError):
    """Several spec errors found in one pass, reported together, sorted by position (one line each)."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors, key=_position)
        first = self.errors[0]
        super().__init__(first.message, first.location)

    def __str__(self) -> str:
        shown = [SpecError.__str__(error) for error in self.errors[:MAX_REPORTED_ERRORS]]
        if len(self.errors) > MAX_REPORTED_ERRORS:
            shown.append(f"... and {len(self.errors) - MAX_REPORTED_ERRORS} more")
        return "\n".join(shown)


def _position(error: SpecError) -> tuple[str, int, int]:
    where = error.location
    return ("", 0, 0) if where is None else (where.file, where.line, where.column)


def did_you_mean(word: object, choices: object) -> str:
    """``; did you mean 'clients'?`` when ``word`` is a near miss of one of ``choices``, else ``""``."""
    import difflib

    if not isinstance(word, str) or not isinstance(choices, list | tuple | set | frozenset | dict):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
