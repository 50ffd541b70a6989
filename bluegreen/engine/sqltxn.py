"""The engine's one shape of an SQLite write transaction on a copy: begin where the work needs it, commit
where it is complete, and roll back on any way out in between (an error, a signal, a failed unit).

A context manager rather than try/finally blocks at every site, so no path can leave a transaction open or
commit half of a step."""

from __future__ import annotations

import apsw


class WriteTransaction:
    """`with WriteTransaction(conn) as txn: txn.begin() ... txn.commit()`; leaving the block with the
    transaction still open rolls it back (quietly: SQLite may already have rolled it back itself)."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.open = False

    def begin(self) -> None:
        """`BEGIN IMMEDIATE`: take the write lock now, so nothing can fail later for want of it."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.open = True

    def commit(self) -> None:
        """`COMMIT` everything since `begin`."""
        self.conn.execute("COMMIT")
        self.open = False

    def __enter__(self) -> WriteTransaction:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.open:
            self.open = False
            try:
                self.conn.execute("ROLLBACK")
            except apsw.Error:
                pass
