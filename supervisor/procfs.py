"""Small kernel files (/proc, cgroupfs) read with as few system calls as it takes.

The CPU meter reads a /proc/PID/stat per process several times a second, the reaper
an environment per process per scan: `open(path, "rb").read()` is seven system calls
each (open, fstat, the isatty ioctl, lseek, two reads, close); `read` here is three
(open, read, close) for anything up to `CHUNK` bytes.
"""

from __future__ import annotations

import os

CHUNK = 65536


def read(path: str) -> bytes:
    """The whole file; OSError as `open` raises it (gone, not ours to read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, CHUNK)
        if len(data) < CHUNK:  # a kernel file hands over what it has in one read
            return data
        parts = [data]
        while chunk := os.read(fd, CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)
