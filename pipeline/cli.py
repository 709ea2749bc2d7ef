"""Process start-up shared by the entry points: check the command line, tune the allocator, run, skip the last GC.

`cli(main, "train")` is the last line of every entry point; the checks themselves live in `pipeline/schema.py`.
"""

import ctypes
import gc
import sys
from collections.abc import Callable
from typing import Any

from pipeline.errors import user_errors
from pipeline.schema import check_command_line


def cli(main: Callable[[], Any], config_name: str) -> None:
    """Run a Hydra entry point after checking its command line: a user error exits 2 before any folder exists."""
    with user_errors():
        check_command_line(config_name, sys.argv[1:])
    warm_malloc()
    main()
    # the interpreter's last garbage collection walks every object the libraries made (torch's alone: ~0.4 s of a
    # 5 s `make predict`); frozen objects are skipped, and exit handlers still run
    gc.freeze()


def warm_malloc() -> None:
    """Start glibc's allocator where its own tuning ends: blocks up to 32 MB come from the heap, not a fresh mmap.

    glibc maps every block above its threshold (128 KB at start) anew, and the kernel zeroes its pages at first
    touch; it raises the threshold only as such blocks are freed, up to 32 MB. A CNN over 64-image batches at 48 px
    allocates ~5 MB activations: a finetuned mnist member's 5 fold models predicted its 1,000 test images in 3.3 s
    from a fresh process, 2.2 s with this (RSS +4 %). Not glibc (macOS, musl): nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)  # glibc's own pairing: twice the mmap threshold
