"""Text a statement cannot take as a bind parameter (``SET``, a Citus function's argument in
a shown plan, a ``COMMENT``), written into it as a SQL string literal."""

from __future__ import annotations


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal: quotes doubled; with a backslash in it, the
    ``E''`` form, so that it reads the same whatever ``standard_conforming_strings`` a
    role or database sets."""
    doubled = text.replace("'", "''")
    if "\\" in text:
        return "E'" + doubled.replace("\\", "\\\\") + "'"
    return "'" + doubled + "'"
