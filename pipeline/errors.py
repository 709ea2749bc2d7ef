"""User-facing errors: one clear line and a non-zero exit instead of a traceback."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.guard import begin, undo


class UserError(Exception):
    """A mistake in the user's data or config; the message names the file/column/key and the fix."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into `error: <message>` on stderr and exit code 2, leaving no new file under outputs/.

    `HYDRA_FULL_ERROR=1` re-raises with the full traceback, for debugging.
    """
    begin()
    try:
        yield
    except UserError as e:
        undo()  # what this run wrote before the error, and Hydra's run folder
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
