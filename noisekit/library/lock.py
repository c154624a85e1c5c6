"""One writer at a time: `LIB/writer.lock`, held with an exclusive `flock` for the whole of a build, a grow, an
`add_features` or a `build_index`.

The kernel drops a `flock` when its process dies, `kill -9` included, so a lock left by a killed writer is stale
by construction: the next writer takes it at once. The file names its holder (pid, host, what it does) for the
one-line refusal a second writer gets; it is emptied on release, so a finished library holds the same bytes
whoever wrote it. In a multi-process build process 0 holds the lock for all of them (see `build_library`).
Readers never lock: shards and indexes are committed by atomic renames.
"""

import json
import os
import socket
import time
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows: no flock; writers are then not excluded
    fcntl = None

LOCK_NAME = "writer.lock"


def lock_path(path):
    return os.path.join(path, LOCK_NAME)


def holder(path):
    """What the lock file says about its holder (a dict; empty when it says nothing)."""
    try:
        with open(lock_path(path)) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def writer_lock(path, action):
    """Hold the library's writer lock while the block runs; a second writer gets a one-line ValueError."""
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ValueError(f"library folder {path!r} cannot be written ({error.strerror}); choose a writable folder "
                         f"(`output`).") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = holder(path)
                raise ValueError(f"library {path!r} is being written by another process (pid {other.get('pid')} on "
                                 f"{other.get('host')}, {other.get('action')} since {other.get('since')}); wait "
                                 f"for it to finish (a killed writer frees the lock at once).") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "action": action,
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
