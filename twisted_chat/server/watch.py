"""Tell the account store when ``credentials.txt`` may have changed on disk.

Accounts added by hand must work at the next login. Checking the file's ``stat`` on
every login costs a worker-thread round trip per login (a ``stat`` may block, so it
cannot run on the reactor thread); on Linux the kernel can tell us instead, through
inotify, and a login then costs no disk access at all unless the file changed.

We watch the *directory*, not the file: editors and our own atomic rewrite replace the
file by renaming a new one over it, which a watch on the old inode would miss. Only
events that end a change are asked for (close after writing, rename in or out, create,
delete, attribute change), so the SQLite state file that usually sits in the same
directory, which is kept open and only modified, wakes us for nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.python.filepath import FilePath

log = Logger()

Stop = Callable[[], None]


def watch_file(reactor: Any, path: Path, changed: Callable[[], None]) -> Stop | None:
    """Call ``changed()`` on the reactor thread whenever ``path`` may have changed.

    Returns a callable that stops watching, or None where inotify is unavailable (not
    Linux, or the per-user watch limit is reached): the caller must then check the file
    itself."""
    try:
        from twisted.internet import inotify
    except ImportError:  # not Linux
        return None
    mask = (
        inotify.IN_CLOSE_WRITE
        | inotify.IN_MOVED_TO
        | inotify.IN_MOVED_FROM
        | inotify.IN_CREATE
        | inotify.IN_DELETE
        | inotify.IN_ATTRIB
    )
    # Through a symlink: the file that changes is the one it points to.
    path = path.resolve()
    name = os.fsencode(path.name)

    def event(_watch: object, child: FilePath[bytes], _mask: int) -> None:
        # A queue overflow or the directory going away names the directory itself;
        # anything we cannot place counts as a change.
        if child.basename() == name or child.path == directory.path:
            changed()

    directory = FilePath(os.fsencode(path.parent))
    try:
        notifier = inotify.INotify(reactor)
    except (inotify.INotifyError, OSError) as e:
        log.warn(
            "cannot use inotify ({error}); checking {path} at every login", path=str(path), error=e
        )
        return None
    try:
        notifier.watch(directory, mask=mask, callbacks=[event])
    except (inotify.INotifyError, OSError) as e:
        notifier.loseConnection()  # closes its descriptor
        log.warn(
            "cannot watch {path} ({error}); checking it at every login", path=str(path), error=e
        )
        return None
    notifier.startReading()

    def stop() -> None:
        notifier.loseConnection()

    return stop
