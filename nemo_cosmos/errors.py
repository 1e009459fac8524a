"""The exceptions the library raises on purpose, and how the command lines show them.

A ``CosmosUserError`` is something the user can fix (a bad flag, a missing or corrupt file, weights
not downloaded): the command lines print its message as one line and exit with status 2. A
``BlockedError`` is a guardrail's refusal: one line, status 3. Anything else is a bug and keeps its
traceback (status 1).
"""

from __future__ import annotations


class CosmosUserError(Exception):
    """Input the user can fix. Subclasses also derive from the matching built-in type, so
    ``except ValueError`` / ``except FileNotFoundError`` in calling code keeps working."""


class BadInputError(CosmosUserError, ValueError):
    """A setting, prompt or file content the library cannot use."""


class MissingFileError(CosmosUserError, FileNotFoundError):
    """A file or folder the run needs is not there."""


class OutputError(CosmosUserError, OSError):
    """An output cannot be written (read-only folder, disk full, a folder where the file goes);
    nothing was replaced."""


class WeightsMissingError(MissingFileError):
    """Model weights are neither on this machine nor downloadable now; the message lists all of
    them and the one command that fetches them."""


class BlockedError(Exception):
    """A guardrail refused the prompt or the video; nothing was written."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (cut to `limit` characters), or its type when the
    message is empty."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def shorten(text: str, limit: int = 120) -> str:
    """`text` for an error line: at most `limit` characters (a 1 MB prompt is not echoed whole)."""
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
