"""Whether a state file's write-ahead log lost writes that were acknowledged.

SQLite reads the ``-wal`` file at start up to its first frame whose checksum is wrong
and silently ignores everything after it: overwriting part of the file in the middle
made 150 of 300 acknowledged messages vanish without a word. A commit is acknowledged
only once its frames are synced (``synchronous=FULL``), and the next transaction's
frames are written only after that, so a frame of a *later* transaction behind a bad
frame proves that a commit the users were told of is being dropped. A bad frame in the
last transaction alone is what a crash in the middle of writing it leaves (it was
never acknowledged), and is not damage.

This reads the file as the format says (https://www.sqlite.org/fileformat.html, "The
WAL File Format"), before SQLite opens it: SQLite's own recovery would fold the good
part into the database and empty the log, and the evidence with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24
MAGIC_LITTLE_ENDIAN = 0x377F0682
MAGIC_BIG_ENDIAN = 0x377F0683


@dataclass(frozen=True)
class WalDamage:
    """Where the log went bad and what would be lost behind it."""

    frame: int
    """The first bad frame (counted from 1)."""
    frames: int
    """Frames in the file."""
    lost_commits: int
    """Acknowledged transactions SQLite would drop: the damaged one and the complete
    ones behind it."""


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_damage(wal: Path) -> WalDamage | None:
    """The damage in ``wal`` that loses acknowledged writes, or None (no file, an
    empty or fresh one, a sound one, or only a torn last transaction)."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < HEADER:
        return None
    magic, _version, page_size, _sequence, salt1, salt2, c0, c1 = struct.unpack(
        ">8I", data[:HEADER]
    )
    if magic not in (MAGIC_LITTLE_ENDIAN, MAGIC_BIG_ENDIAN):
        return None  # not a log SQLite would read either: it starts afresh
    big_endian = magic == MAGIC_BIG_ENDIAN
    if _checksum(data[:24], 0, 0, big_endian) != (c0, c1):
        return None  # SQLite ignores a log whose header is bad: nothing is read from it
    frame_size = FRAME_HEADER + page_size
    frames = (len(data) - HEADER) // frame_size
    s0, s1 = c0, c1
    first_bad: int | None = None
    ended = False
    """The transaction of the bad frame has its commit frame behind us."""
    lost = 0
    later_frames = 0
    for index in range(frames):
        start = HEADER + index * frame_size
        header = data[start : start + FRAME_HEADER]
        _page, size_after, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", header)
        ours = (f_salt1, f_salt2) == (salt1, salt2)
        if first_bad is None:
            if not ours:
                return None  # the end of this log's frames: older ones follow, unread
            s0, s1 = _checksum(header[:8], s0, s1, big_endian)
            s0, s1 = _checksum(data[start + FRAME_HEADER : start + frame_size], s0, s1, big_endian)
            if (s0, s1) != (f0, f1):
                first_bad = index
                ended = size_after != 0
                lost = 1  # its transaction, if a later one proves it was acknowledged
            continue
        if not ours:
            continue
        if ended:
            later_frames += 1
            lost += size_after != 0
        elif size_after != 0:
            ended = True
    if first_bad is None or later_frames == 0:
        return None
    return WalDamage(first_bad + 1, frames, lost)
