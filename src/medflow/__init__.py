import contextlib
import ctypes
import os
import sys

# Arrow's default allocator (mimalloc) keeps the memory it frees resident for reuse, so a step that reads or writes
# a table of a whole manifest (200,000 images: ~40 MB) leaves that much behind for every step after it. The system
# allocator gives large buffers back when they are freed, and the rest on release_unused(). Read by pyarrow when it
# first allocates, so set here, before any medflow module imports it; a value already in the environment wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

# glibc serves a block from mmap, and unmaps it when freed, only above a threshold that it raises to the size of
# each such block freed (up to 32 MB); a column of a 200,000-row table freed sets it at ~13 MB, and every block
# below that comes from the heap after it, where freed space stays resident (bench/image_streaming.py memory at
# 200,000 images: peak 604 MB, 540 with the threshold fixed, 527 at 20,000). Setting it stops the raising.
if sys.platform.startswith("linux"):
    with contextlib.suppress(AttributeError):  # a C library without mallopt (musl)
        ctypes.CDLL(None).mallopt(-3, 2**20)  # M_MMAP_THRESHOLD: 1 MB
