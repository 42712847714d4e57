"""The check of a state file's write-ahead log, on logs SQLite itself wrote."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from twisted_chat.server.sqlite_store import StateFileError, backup, open_state
from twisted_chat.server.walcheck import wal_damage


def written_log(tmp_path: Path, commits: int = 300) -> tuple[Path, Path]:
    """A database and a copy of its -wal after ``commits`` commits, none checkpointed
    (as after a kill -9)."""
    database = tmp_path / "made.sqlite3"
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE t (x)")
    for n in range(commits):
        connection.execute("INSERT INTO t VALUES (?)", (f"message {n} " + "x" * 50,))
    copy_db, copy_wal = tmp_path / "state.sqlite3", tmp_path / "state.sqlite3-wal"
    shutil.copy(database, copy_db)
    shutil.copy(f"{database}-wal", copy_wal)
    connection.close()
    return copy_db, copy_wal


def damage(wal: Path, where: float) -> None:
    data = bytearray(wal.read_bytes())
    at = int(len(data) * where)
    data[at : at + 100] = b"\xff" * 100
    wal.write_bytes(bytes(data))


def test_a_sound_log_and_no_log_are_fine(tmp_path: Path) -> None:
    _, wal = written_log(tmp_path)
    assert wal_damage(wal) is None
    assert wal_damage(tmp_path / "none-wal") is None


def test_damage_in_the_middle_is_found_with_what_it_would_lose(tmp_path: Path) -> None:
    """Overwriting part of the log made SQLite drop 150 of 300 messages silently."""
    database, wal = written_log(tmp_path)
    damage(wal, 0.5)
    found = wal_damage(wal)
    assert found is not None and 140 < found.lost_commits < 160
    assert found.frame < found.frames
    rows = sqlite3.connect(f"file:{database}?mode=ro", uri=True).execute("SELECT count(*) FROM t")
    assert rows.fetchone()[0] < 300  # what SQLite would have served without a word


def test_a_torn_last_transaction_is_not_damage(tmp_path: Path) -> None:
    """A crash while the last commit was being written: it was never acknowledged."""
    _, wal = written_log(tmp_path)
    data = bytearray(wal.read_bytes())
    data[-50:] = b"\0" * 50
    wal.write_bytes(bytes(data))
    assert wal_damage(wal) is None


def test_the_server_and_the_backup_refuse_a_damaged_log(tmp_path: Path) -> None:
    database, wal = written_log(tmp_path)
    damage(wal, 0.5)
    with pytest.raises(StateFileError, match=r"write-ahead log .*state.sqlite3-wal is damaged"):
        open_state(database)
    with pytest.raises(StateFileError, match="--accept-damaged-wal"):
        backup(database, tmp_path / "copy.sqlite3")
    assert wal.read_bytes()  # the evidence is kept
