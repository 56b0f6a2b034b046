"""The error tree drawn in errors.py's docstring is the classes' own: every error is
drawn under each of its parents, and nothing is drawn that is not so."""

from __future__ import annotations

import inspect
import re

import pytest

from silentpulse_db import errors
from silentpulse_db.errors import (
    LockTimeoutError,
    LockWaitError,
    MigrationStateError,
    RequiredVersionError,
    SilentPulseDBError,
    TableLockTimeoutError,
)

NAME = re.compile(r"\b[A-Z][A-Za-z]+Error\b")


def _drawn() -> dict[str, set[str]]:
    """Each drawn class and the parents it is drawn under."""
    doc = errors.__doc__ or ""
    lines = doc[doc.index("    SilentPulseDBError\n") :].splitlines()
    parents: dict[str, set[str]] = {}
    path: list[str] = []
    for line in lines:
        found = NAME.search(line)
        if found is None or not ("──" in line or line.strip() == "SilentPulseDBError"):
            if path and not line.strip():
                break  # the end of the drawing
            continue
        depth = (found.start() - 4) // 4
        path[depth:] = [found.group()]
        parents.setdefault(found.group(), set())
        if depth:
            parents[found.group()].add(path[depth - 1])
    return parents


def _classes() -> dict[str, set[str]]:
    """Each error class of errors.py and its direct parents among them."""
    return {
        name: {b.__name__ for b in cls.__bases__ if issubclass(b, SilentPulseDBError)}
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, SilentPulseDBError)
    }


def test_the_drawing_is_the_tree() -> None:
    assert _drawn() == _classes()


def test_one_except_clause_catches_either_lock_wait() -> None:
    for error in (
        LockTimeoutError("held"),
        TableLockTimeoutError("held", file="000001_x.up.sql"),
    ):
        with pytest.raises(LockWaitError):
            raise error
        assert error.retryable


def test_state_errors_are_for_an_operator_and_a_required_version_passes() -> None:
    assert not MigrationStateError("dirty").retryable
    required = RequiredVersionError(
        "later", file="f", table="schema_migrations", version=3, found="no version"
    )
    assert isinstance(required, MigrationStateError) and required.retryable
