"""The error hierarchy of persam and the one-line message helper every interface uses.

Every error a user can cause is a :class:`PersamError` whose message is one line naming the file,
option or value at fault. The classes also derive from the built-in exception that code catching
them already expects (``ValueError`` for bad input, ``RuntimeError`` for weights, ``OSError`` for
output paths), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class PersamError(Exception):
    """Base of every persam error; the message is one line."""


class InputError(PersamError, ValueError):
    """Bad user input (unreadable file, wrong size, empty mask, ...). The message is one line."""


class OutputPathError(InputError, OSError):
    """An output path that cannot be written (a file where a folder is needed, no permission).

    It is both an :class:`InputError` (the path is the user's choice) and an :class:`OSError`
    (what code writing files expects); the message is one line naming the path.
    """


class MaskTooSmallError(InputError):
    """A reference mask too small to cover one cell of the image-embedding grid."""


class ConceptMismatchError(PersamError, ValueError):
    """A concept is applied with a backbone (or weights) other than the one it was learned with."""


class WeightsError(PersamError, RuntimeError):
    """A checkpoint cannot be found, downloaded, read or loaded. The message is one line."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was downloaded or checked but no published sha256 exists to verify it against."""


def first_line(message: object, max_len: int | None = None) -> str:
    """The first non-empty line of a message or exception text (they sometimes carry tracebacks or
    paragraphs of advice), cut to ``max_len`` characters when given; ``"unknown error"`` if empty."""
    text = str(message).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line and isinstance(message, BaseException):
        line = type(message).__name__
    line = line or "unknown error"
    if max_len is not None and len(line) > max_len:
        line = line[: max_len - 3] + "..."
    return line


def describe(e: BaseException, max_len: int | None = None) -> str:
    """``"<ExceptionType>: <first line>"`` of an exception, for wrapping a library error in ours."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {first_line(text, max_len)}"
