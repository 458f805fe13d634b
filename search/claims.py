"""Claims: which of a study's drivers does a piece of work, kept in the study's own database.

Optuna has no compare-and-set on study attributes, so two drivers that both read "no greedy chain
yet" would both compute it. A claim is a row of a small table of tadprune's own,
`tadprune_claims`, in the same database as the study, keyed by (study, name): an INSERT by a second
driver fails on the key, on SQLite and PostgreSQL alike, so exactly one driver holds it.

A claim is a lease, so that a killed driver blocks nothing for long: its holder renews it every
heartbeat, and one not renewed within the grace period may be taken over by any driver (an UPDATE
whose WHERE still requires the lease to be expired, so of several only one succeeds). Times come
from the database's clock, as Optuna's own heartbeats do, so drivers on machines whose clocks
disagree still agree on which lease expired.

A claim ends in one of two ways:
- released (its row deleted): the work may be done again; a mutex such as the groundwork's ends
  so, and so does a schedule whose trial failed;
- done (its row kept with a JSON result and no lease): the work happened and says where its result
  is, e.g. the trial that ran a schedule, which later proposals of that schedule reuse.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import Any, TypeVar

import sqlalchemy as sa
from optuna.storages import RDBStorage

_metadata = sa.MetaData()
_claims = sa.Table(
    "tadprune_claims", _metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires", sa.Float, nullable=True),  # database-clock epoch seconds; NULL once done
    sa.Column("result", sa.Text, nullable=True),    # JSON once done
)


T = TypeVar("T")


def creating_tables(create: Callable[[], T], attempts: int = 5) -> T:
    """`create()` (which makes tables if missing), again when another driver made them between its
    check and its CREATE: SQLAlchemy's `create_all`, Optuna's included, checks then creates, so two
    drivers opening a new database at once fail one of them with "already exists" (or on the unique
    key of Optuna's schema-version row)."""
    for attempt in range(attempts):
        try:
            return create()
        except sa.exc.DBAPIError as error:
            raced = isinstance(error, sa.exc.IntegrityError) or "already exists" in str(error)
            if not raced or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Claim:
    """What `StudyClaims.claim` found: held by the caller now, done by someone (with its result),
    or held by another live `owner`."""

    held: bool = False
    done: bool = False
    result: Any = None
    owner: str | None = None


class StudyClaims:
    """Leased claims of one driver on one study (see the module docstring)."""

    def __init__(self, storage: RDBStorage, study_id: int, lease_s: float) -> None:
        self.engine = storage.engine
        self.study_id = study_id
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.held: set[str] = set()
        creating_tables(lambda: _metadata.create_all(self.engine, checkfirst=True))

    def _now(self, conn: sa.Connection) -> float:
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
        # SQLite's CURRENT_TIMESTAMP is naive UTC; PostgreSQL's now() carries its zone.
        return (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).timestamp()

    def _where(self, name: str):
        return sa.and_(_claims.c.study_id == self.study_id, _claims.c.name == name)

    def claim(self, name: str) -> Claim:
        """Take `name` if it is free or its lease expired; else say who holds it or what it gave."""
        try:
            with self.engine.begin() as conn:
                conn.execute(_claims.insert().values(study_id=self.study_id, name=name, owner=self.owner,
                                                     expires=self._now(conn) + self.lease_s))
        except sa.exc.IntegrityError:
            pass  # taken, or done: a fresh transaction looks (PostgreSQL aborts this one)
        else:
            self.held.add(name)
            return Claim(held=True)
        with self.engine.begin() as conn:
            now = self._now(conn)
            taken_over = conn.execute(
                _claims.update().where(self._where(name), _claims.c.result.is_(None), _claims.c.expires < now)
                .values(owner=self.owner, expires=now + self.lease_s)).rowcount
            if taken_over:
                self.held.add(name)
                return Claim(held=True)
            row = conn.execute(sa.select(_claims.c.owner, _claims.c.result).where(self._where(name))).first()
        if row is None:  # released between the two transactions: try again
            return self.claim(name)
        if row.result is not None:
            return Claim(done=True, result=json.loads(row.result))
        return Claim(owner=row.owner)

    def renew(self) -> None:
        """Extend the lease of every claim this driver holds (called every heartbeat)."""
        if not self.held:
            return
        with self.engine.begin() as conn:
            conn.execute(_claims.update().where(
                _claims.c.study_id == self.study_id, _claims.c.name.in_(sorted(self.held)),
                _claims.c.owner == self.owner, _claims.c.result.is_(None)).values(expires=self._now(conn) + self.lease_s))

    def release(self, name: str) -> None:
        """Give the claim up without a result: whoever asks next may do the work."""
        self.held.discard(name)
        with self.engine.begin() as conn:
            conn.execute(_claims.delete().where(self._where(name), _claims.c.owner == self.owner,
                                                _claims.c.result.is_(None)))

    def complete(self, name: str, result: Any) -> None:
        """Mark the work done with `result`, for good. The first result stays: a driver whose lease
        expired while it worked may finish after another took the work over."""
        self.held.discard(name)
        with self.engine.begin() as conn:
            conn.execute(_claims.update().where(self._where(name), _claims.c.result.is_(None))
                         .values(owner=self.owner, expires=None, result=json.dumps(result)))

    def release_all(self) -> None:
        for name in list(self.held):
            self.release(name)

    def register_launch(self, record: dict) -> int:
        """A number unique to this launch among the study's launches (0, 1, ...), kept with `record`."""
        with self.engine.begin() as conn:
            number = conn.execute(sa.select(sa.func.count()).select_from(_claims).where(
                _claims.c.study_id == self.study_id, _claims.c.name.like("launch:%"))).scalar_one()
        while True:
            try:
                with self.engine.begin() as conn:
                    conn.execute(_claims.insert().values(study_id=self.study_id, name=f"launch:{number}",
                                                         owner=self.owner, expires=None, result=json.dumps(record)))
                return number
            except sa.exc.IntegrityError:
                number += 1  # another driver took this number first
