"""The prediction log: every prediction and every piece of feedback, in a database through SQLAlchemy.

SQLite (WAL journal, so readers never block the writer) by default; PostgreSQL with a `postgresql://` URL (the
psycopg 3 driver). Both tables are created when missing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, delete, event, false,
                        func, insert, select)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from headstart.errors import HeadstartError


class Base(DeclarativeBase):
    pass


class PredictionRow(Base):
    """One answered input: which model version answered it, on which arm, what it said, and about what."""

    __tablename__ = "predictions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer, index=True)
    arm: Mapped[str] = mapped_column(String(16))            # production, candidate or shadow
    runtime: Mapped[str] = mapped_column(String(64))        # torch, or the ONNX variant's name
    input_hash: Mapped[str] = mapped_column(String(64), index=True)
    text_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    label: Mapped[str] = mapped_column(Text)  # class names have no length limit
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict] = mapped_column(JSON)
    embedding: Mapped[list] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)


class FeedbackRow(Base):
    """The true label of a prediction, arriving later."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    label: Mapped[str] = mapped_column(Text)  # class names have no length limit


def shown_url(url: str) -> str:
    """The URL with its passwords masked (the user's, and libpq's password / sslpassword parameters), for messages."""
    try:
        parsed = make_url(url)
    except ArgumentError:  # not even parseable: say nothing of what it holds
        return "(the URL given)"
    hidden = {key: "***" for key in parsed.query if key.lower() in ("password", "sslpassword")}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def database_url(url: str | None, default: Path) -> str:
    """The SQLAlchemy URL to use: `default` as SQLite when none is given; psycopg 3 for postgresql:// URLs."""
    if not url:
        default.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{default}"
    if url.split("://", 1)[-1].split("/", 1)[0].count("@") > 1:
        # read as user:password@host, the rest of the password would become the host name, and be shown in errors
        raise HeadstartError("--db: the URL holds more than one '@' before its host. Write an '@' inside the user "
                             "name or password as %40, e.g. postgresql://user:pa%40ss@host:5432/db.")
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class PredictionLog:
    """Writes and reads the prediction log. Calls block: the service runs them on its one database thread."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = create_engine(url, pool_pre_ping=True)
        except Exception as exc:  # unknown dialect, missing driver, malformed URL
            raise HeadstartError(f"--db {shown_url(url)}: cannot use this database URL ({exc}). Give sqlite:///PATH or "
                                 "postgresql://USER:PASSWORD@HOST:PORT/DATABASE.") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        database = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        self._file = Path(database) if database and database != ":memory:" else None
        try:
            self._open()
        except Exception as exc:
            raise HeadstartError(f"--db {shown_url(url)}: cannot open the prediction log for writing "
                                 f"({driver_message(exc)}). Give a database this service can write to.") from None

    def _open(self) -> None:
        Base.metadata.create_all(self.engine)
        if self._file is not None:  # a SQLite write that changes nothing: a file the service may only read is
            with self.engine.begin() as connection:  # refused now, not at the first prediction, with a 503
                connection.execute(delete(FeedbackRow).where(false()))
        if self.engine.dialect.name == "postgresql":  # asked, not tried: an append-only role may not delete
            tables = [table.name for table in (PredictionRow.__table__, FeedbackRow.__table__)]
            with self.engine.connect() as connection:
                denied = [name for name in tables
                          if not connection.execute(select(func.has_table_privilege(name, "INSERT"))).scalar()]
            if denied:
                raise PermissionError(f"its role may not INSERT into {' and '.join(denied)}: GRANT INSERT ON "
                                      f"{', '.join(denied)} TO that role")
        self._identity = _identity(self._file)

    def _same_file(self) -> None:
        """A SQLite file removed or replaced while the service runs is opened again (and created when missing):
        pooled connections would otherwise go on writing to the removed file, and every row would be lost."""
        if self._file is not None and _identity(self._file) != self._identity:
            logging.getLogger("uvicorn.error").warning("The prediction log %s was removed or replaced; it is opened "
                                                       "again.", self._file)
            self._checkpoint()
            self.engine.dispose()
            self._open()

    def _checkpoint(self) -> None:
        """Copy the WAL's rows into the SQLite file the pooled connections hold open. SQLite does this itself when
        the last connection closes, but not for a file moved away (rotated): its newest rows would stay behind in a
        WAL named for the old path, and be lost."""
        if self._file is not None:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def write_predictions(self, rows: list[dict]) -> None:
        """Insert prediction rows (dicts of PredictionRow's columns) in one transaction."""
        self._same_file()
        with Session(self.engine) as session, session.begin():
            session.execute(insert(PredictionRow), rows)

    def prediction(self, prediction_id: str) -> PredictionRow | None:
        self._same_file()
        with Session(self.engine) as session:
            return session.get(PredictionRow, prediction_id)

    def write_feedback(self, prediction_id: str, label: str) -> None:
        self._same_file()
        with Session(self.engine) as session, session.begin():
            session.add(FeedbackRow(prediction_id=prediction_id, label=label, created=datetime.now(timezone.utc)))

    def count(self, table=PredictionRow) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(table))

    def close(self) -> None:
        try:
            self._checkpoint()
        except SQLAlchemyError as exc:  # the database went away: closing must still release what it holds
            logging.getLogger("uvicorn.error").warning("The prediction log %s could not be checkpointed on closing "
                                                       "(%s).", shown_url(self.url), type(exc).__name__)
        finally:
            self.engine.dispose()


def driver_message(exc: Exception) -> str:
    """The first line of the database driver's own words, without the SQL and the link SQLAlchemy adds."""
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def _identity(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a file, None when there is none."""
    if path is None:  # PostgreSQL, or SQLite in memory
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints, never corrupt
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
