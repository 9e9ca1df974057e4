"""What the experiments' command lines share: one ``error: ...`` line for a user's mistake, ``--debug`` for more.

A user's mistake (a bad flag value, missing or corrupt data, an unwritable or occupied output folder, a corrupt
checkpoint) raises a ``ValueError`` or an ``OSError`` whose message says what to do; the CLIs print it as one line
and exit with status 1. Any other exception is a bug and keeps its traceback, and ``--debug`` shows the traceback
of a user's mistake too.

>>> with user_errors(debug=False):
...     raise ValueError("batch_size (--batch-size) must be a positive integer, got 0")
Traceback (most recent call last):
...
SystemExit: 1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

__all__ = ["USER_ERRORS", "add_debug_flag", "positive_int", "non_negative_int", "user_errors"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not only its message")


@contextlib.contextmanager
def user_errors(debug: bool, kinds: tuple[type[BaseException], ...] = USER_ERRORS) -> Iterator[None]:
    """Turns an exception of ``kinds`` into ``error: <message>`` on stderr and exit status 1 (unless ``debug``)."""
    try:
        yield
    except kinds as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


#: argparse ``type=`` for flags of a CLI's own (not a run's configuration, which :class:`experiments.train.RunConfig`
#: checks): argparse then names the flag in its usage error.
positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "a non-negative integer")
