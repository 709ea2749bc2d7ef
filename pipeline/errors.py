"""User-facing errors: one clear line and a non-zero exit instead of a traceback."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A mistake in the user's data or config; the message names the file/column/key and the fix."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into `error: <message>` on stderr and exit code 2.

    `HYDRA_FULL_ERROR=1` re-raises with the full traceback, for debugging.
    """
    try:
        yield
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
