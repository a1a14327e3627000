"""DuckLake: one trace store that many collectors and readers share, on many machines.

A lake keeps its catalog in PostgreSQL and its data as Parquet files in a directory or a bucket
(https://ducklake.select). DuckDB attaches it like a database, so the store's SQL runs on it
unchanged, except where a lake differs from a file:

- **No primary keys.** Spans of one session may reach different collectors, each adding to the
  session's counts, so a lake keeps a session as append-only deltas (``session_deltas``) read
  through the ``sessions`` view, which adds them up with the same rules as the file store's
  upsert. Content and message-chain nodes are content-addressed: two collectors may both store
  one, so the tables are ``content_rows`` and ``chain_rows``, read through views that show each
  key once.
- **Many writers.** Every process may write; DuckLake retries a commit that races another.
- **Commits are files.** Each commit writes a Parquet file per table, so a collector commits
  seconds apart (``COMMIT_INTERVAL_S``), not every quarter second.

The URL is ``ducklake:<catalog>[?data_path=<directory or s3://bucket/prefix/>]``, where the catalog is
``postgres:<libpq connection string>`` (for example ``postgres:dbname=flightrec host=db.internal``)
or a local ``<file>.ducklake`` (one machine; for trying it out). Passwords come from libpq's own
environment (``PGPASSWORD``, ``~/.pgpass``), never from the URL: a URL is printed in messages.

The extensions load offline: ``pip install 'flightrec[lake]'`` brings them as wheels, and the
first use installs them into a private extension directory (``lake_extension_dir``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import duckdb

from ._errors import ConfigError, SchemaTooNewError, StoreError
from ._ingest import _BIGINT_SUMS, _SESSION_SUMS
from ._migrations import LATEST, MIGRATIONS

SCHEME = "ducklake:"
ALIAS = "lake"
"""The name the lake is attached under (``USE lake``): the store's SQL names its tables unqualified."""
COMMIT_INTERVAL_S = 2.0
"""How long a collector on a lake gathers requests into one commit (RESULTS.md: DuckLake's cost a commit)."""
EXTENSIONS = (("ducklake", "duckdb_extension_ducklake", "ducklake"), ("postgres_scanner", "duckdb_extension_postgres",
                                                                       "postgres"))
"""Each extension's name, the module of the wheel that carries it, and its file's name there."""
OBJECT_STORE = ("httpfs", "duckdb_extension_httpfs", "httpfs")
"""The extension that reads and writes ``s3://`` data paths, loaded only for them."""
WRITE_CHECK = ".flightrec-write-check"
"""What a writer puts in the data path as it opens the lake (one file a process, removed at once from a
directory; ``maintain`` removes it from a bucket), so that a path it cannot write fails at once, not
at the first commit that makes a file (small commits stay in the catalog)."""
_OPTIONS = ("data_path",)
_SECRET = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
CONNECT_TIMEOUT_S = 10
"""How long reaching the catalog may take, unless the URL sets libpq's ``connect_timeout``."""
INSTALL_HINT = "pip install 'flightrec[lake]'"
_ATTACH_TRIES = 5


def is_lake(db: str | os.PathLike[str] | None) -> bool:
    """Whether ``db`` names a lake rather than a DuckDB file."""
    return isinstance(db, str) and db.startswith(SCHEME)


def masked(text: str) -> str:
    """``text`` with any ``password=…`` of a connection string replaced: messages quote the URL."""
    return _SECRET.sub(r"\1***", text)


@dataclass(frozen=True)
class LakeUrl:
    """A parsed ``ducklake:`` URL."""

    catalog: str
    """What DuckDB's ``ATTACH 'ducklake:…'`` takes: ``postgres:<conninfo>`` or a catalog file."""
    data_path: str | None

    @classmethod
    def parse(cls, url: str) -> LakeUrl:
        """Raises ``ConfigError`` for a URL that names no catalog, an option it does not know, or a password."""
        example = ("for example ducklake:postgres:dbname=flightrec host=db.internal?data_path=s3://bucket/traces/ "
                   "(the password from PGPASSWORD or ~/.pgpass)")
        rest = url[len(SCHEME):]
        catalog, _, query = rest.partition("?")
        catalog = catalog.strip()
        if not catalog:
            raise ConfigError(f"the lake URL {url!r} names no catalog: {example}.")
        if _SECRET.search(catalog):
            raise ConfigError(f"the lake URL {masked(url)!r} holds a password, which would be printed in messages and "
                              "process lists: remove it and set PGPASSWORD, or put it in ~/.pgpass.")
        options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigError(f"the lake URL {masked(url)!r} has options {', '.join(unknown)} that flightrec does not "
                              f"know; it takes {', '.join(_OPTIONS)} ({example}).")
        kind = catalog.split(":", 1)[0] if ":" in catalog else None
        if kind not in (None, "postgres"):
            raise ConfigError(f"the lake URL {masked(url)!r} names a {kind} catalog; flightrec takes a PostgreSQL one "
                              f"(postgres:…) or a local .ducklake file: {example}.")
        data_path = options.get("data_path") or None
        if kind == "postgres" and data_path is None:
            raise ConfigError(f"the lake URL {masked(url)!r} names no data_path, where the Parquet files go: add "
                              "?data_path=<a directory every process can reach, or s3://bucket/prefix/>.")
        if kind == "postgres" and "connect_timeout" not in catalog:
            # libpq waits forever on a host that takes the connection and never answers.
            catalog += f" connect_timeout={CONNECT_TIMEOUT_S}"
        return cls(catalog, data_path)


def cache_dir() -> Path:
    """flightrec's directory in the user's cache (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flightrec"


def lake_extension_dir() -> Path:
    """Where the lake's extensions are installed from their wheels: ``$FLIGHTREC_EXTENSION_DIR``, else
    ``cache_dir()`` (never DuckDB's ``~/.duckdb``, which others share)."""
    override = os.environ.get("FLIGHTREC_EXTENSION_DIR")
    return Path(override) if override else cache_dir() / "duckdb-extensions"


def _load_extensions(con: duckdb.DuckDBPyConnection, extensions: tuple[tuple[str, str, str], ...]) -> None:
    for name, module, file in extensions:
        try:
            con.execute(f"LOAD {name}")
            continue
        except duckdb.Error:
            pass  # not installed in this directory yet
        spec = importlib.util.find_spec(module)
        wheel_file = None
        if spec is not None and spec.submodule_search_locations:
            wheel_file = (Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
                          / f"{file}.duckdb_extension")
        if wheel_file is None or not wheel_file.exists():
            raise StoreError(
                f"a lake needs DuckDB's {name} extension for duckdb {duckdb.__version__}, and it is not installed. "
                f"Run `{INSTALL_HINT}` (it pins the duckdb its extensions are built for).")
        try:
            con.execute(f"INSTALL '{wheel_file}'")
            con.execute(f"LOAD {name}")
        except duckdb.Error as exc:
            raise StoreError(f"installing DuckDB's {name} extension into {lake_extension_dir()} failed: {exc}. "
                             "Check that the directory is writable, or set FLIGHTREC_EXTENSION_DIR.") from None


def connect(url: str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached and in use (``USE lake``).

    Raises:
        ConfigError: the URL is malformed.
        StoreError: the extensions are missing, the catalog cannot be reached, or the data path
            does not match the catalog's; the message says what to do.
    """
    lake = LakeUrl.parse(url)
    shown = masked(url)
    directory = lake_extension_dir()
    directory.mkdir(parents=True, exist_ok=True)
    # No download ever: the extensions come from the wheels (the machine may have no network).
    con = duckdb.connect(config={"extension_directory": str(directory), "autoinstall_known_extensions": False})
    try:
        _load_extensions(con, EXTENSIONS)
        if lake.data_path and lake.data_path.startswith("s3://"):
            _load_extensions(con, (OBJECT_STORE,))
            _s3_secret(con)
        options = [f"DATA_PATH '{_quoted(lake.data_path)}'"] if lake.data_path else []
        if read_only:
            options.append("READ_ONLY")
        with_options = f" ({', '.join(options)})" if options else ""
        for attempt in range(_ATTACH_TRIES):
            try:
                con.execute(f"ATTACH '{SCHEME}{_quoted(lake.catalog)}' AS {ALIAS}{with_options}")
                break
            except duckdb.Error as exc:
                # Processes that open a new lake at once race to make DuckLake's own catalog tables:
                # the losers find them made, once the winner has committed.
                if "Failed to initialize DuckLake" not in str(exc) or attempt == _ATTACH_TRIES - 1:
                    raise _attach_error(shown, lake, exc) from None
                time.sleep(0.2 * (attempt + 1))
        con.execute(f"USE {ALIAS}")
        con.execute("SET enable_progress_bar = false")
        if not read_only and lake.data_path:
            _check_writable(con, shown, lake.data_path)
    except BaseException:
        con.close()
        raise
    return con


def _s3_secret(con: duckdb.DuckDBPyConnection) -> None:
    """S3 credentials from the AWS SDKs' own variables; ``AWS_ENDPOINT_URL`` for an S3-compatible store
    (MinIO, Ceph, R2: path-style URLs)."""
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise ConfigError("an s3:// data_path needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
                          "(and AWS_REGION; AWS_ENDPOINT_URL for an S3-compatible store).")
    parts = {"KEY_ID": key, "SECRET": secret, "REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
             or "us-east-1", "SESSION_TOKEN": env.get("AWS_SESSION_TOKEN")}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    settings = []
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        parts["ENDPOINT"] = host.rstrip("/") or scheme
        settings = ["URL_STYLE 'path'", f"USE_SSL {'false' if scheme == 'http' else 'true'}"]
    values = [f"{k} '{_quoted(v)}'" for k, v in parts.items() if v]
    con.execute(f"CREATE SECRET flightrec_s3 (TYPE s3, {', '.join(values + settings)})")


def _check_writable(con: duckdb.DuckDBPyConnection, shown: str, data_path: str) -> None:
    target = f"{data_path.rstrip('/')}/{WRITE_CHECK}-{os.getpid()}-{time.time_ns()}.parquet"
    try:
        if "://" not in data_path:
            Path(data_path).mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT 1 AS ok) TO '{_quoted(target)}' (FORMAT parquet)")
        if "://" not in data_path:
            os.remove(target)
    except (duckdb.Error, OSError) as exc:
        raise StoreError(f"the lake {shown} cannot write its files to {data_path}: {str(exc).splitlines()[0]}. Check "
                         "that the directory or bucket exists and that this process may write it.") from None


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Ends the failed transaction of ``con``, if it is still open: a COMMIT that failed (on a lake, one
    that lost to another writer's) has rolled back already, and a second ROLLBACK would raise over
    the error worth reporting."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _attach_error(shown: str, lake: LakeUrl, exc: duckdb.Error) -> StoreError:
    text = masked(str(exc))
    if "Unable to connect to Postgres" in text or "could not connect" in text.lower():
        reason = text.split("failed:", 1)[-1].strip().splitlines()[0] if "failed:" in text else text.splitlines()[0]
        return StoreError(f"cannot reach the lake's catalog ({shown}): {reason}. Check the host, port, database and "
                          "user in the URL, and PGPASSWORD or ~/.pgpass for the password.")
    if "does not match existing data path" in text:
        return StoreError(f"the lake {shown} keeps its files elsewhere than data_path={lake.data_path}: "
                          f"{text.splitlines()[0]} Give the data_path the lake was made with.")
    if "version" in text.lower() and ("newer" in text.lower() or "not supported" in text.lower()):
        return SchemaTooNewError(f"the lake {shown} was written by a newer DuckLake than this flightrec's "
                                 f"(duckdb {duckdb.__version__}): {text.splitlines()[0]} Upgrade flightrec.")
    return StoreError(f"cannot open the lake {shown}: {text.splitlines()[0]}")


# -- the schema ------------------------------------------------------------------------------

TABLES = {"sessions": "session_deltas", "content": "content_rows", "message_chain": "chain_rows"}
"""The file store's tables that a lake keeps under another name, read through a view of the file's name:
changes go to the table (retention's deletes and updates), reads to the view."""
_KEYS = {"content": "hash", "message_chain": "node"}
"""The key that a content-addressed view shows once (two collectors may both have stored it)."""
ROW_GROUP = 4096
"""Rows a Parquet row group holds in a lake's files (DuckDB's default: 122,880). Parquet has no index:
a session's rows, or content by key, are found by skipping row groups whose range excludes them, so
small groups, and the content-addressed tables sorted by key, make one session's account 4× faster at
1M spans (RESULTS §52) for 11% more bytes."""


def _file_columns() -> dict[str, list[tuple[str, str, str | None, bool]]]:
    """Each table of the file store's latest schema: its columns' names, types, defaults and nullability."""
    con = duckdb.connect()
    try:
        for m in MIGRATIONS:
            con.execute(m.sql)
        rows = con.execute(
            "SELECT table_name, column_name, data_type, column_default, is_nullable FROM duckdb_columns() "
            "WHERE database_name = current_database() AND NOT internal ORDER BY table_name, column_index").fetchall()
    finally:
        con.close()
    tables: dict[str, list[tuple[str, str, str | None, bool]]] = {}
    for table, column, type_, default, nullable in rows:
        tables.setdefault(table, []).append((column, type_, default, nullable))
    return tables


def _create_table(name: str, columns: list[tuple[str, str, str | None, bool]], *, deltas: bool = False) -> str:
    # A lake has no keys; NOT NULL and defaults it keeps. A session delta may lack what a session row
    # must have (its origin is NULL until the session's root span arrives).
    parts = [f"{c} {t}" + (f" DEFAULT {d}" if d is not None and not deltas else "")
             + ("" if n or (deltas and c != "session_id") else " NOT NULL") for c, t, d, n in columns]
    if deltas:
        parts.append("committed_ns BIGINT NOT NULL")
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(parts)})"


def _sessions_view(columns: list[str]) -> str:
    """The ``sessions`` view: a session's deltas added up as the file store's upsert adds a batch into
    its row (``_store._combined_session``): counts add (held at the column's bound), the span of time
    widens, the newest delta's names win, and the newest ended delta's status."""
    newest = "arg_max({c}, committed_ns) FILTER (WHERE {c} IS NOT NULL)"
    exprs = {
        "start_ns": "min(start_ns)", "end_ns": "max(end_ns)", "ended": "bool_or(ended)",
        "status": "coalesce(arg_max(status, committed_ns) FILTER (WHERE ended), 'running')",
        "status_reason": "CASE WHEN bool_or(ended) THEN arg_max(status_reason, committed_ns) FILTER (WHERE ended) "
                         "ELSE arg_max(status_reason, committed_ns) END",
        "cost_usd": "sum(cost_usd)",
        "origin": "coalesce(arg_max(origin, committed_ns) FILTER (WHERE origin <> 'production'), 'production')",
        "content_pruned_ns": "max(content_pruned_ns)",
    }
    for c in _SESSION_SUMS:
        bound = 2**63 - 1 if c in _BIGINT_SUMS else 2**31 - 1
        kind = "BIGINT" if c in _BIGINT_SUMS else "INTEGER"
        exprs[c] = f"CAST(least(sum(CAST({c} AS HUGEINT)), {bound}) AS {kind})"
    select = ", ".join("session_id" if c == "session_id" else f"{exprs.get(c) or newest.format(c=c)} AS {c}"
                       for c in columns)
    return f"CREATE OR REPLACE VIEW sessions AS SELECT {select} FROM session_deltas GROUP BY session_id"


def _keyed_view(name: str, key: str, columns: list[str]) -> str:
    rest = ", ".join(f"any_value({c}) AS {c}" for c in columns if c != key)
    return f"CREATE OR REPLACE VIEW {name} AS SELECT {key}, {rest} FROM {TABLES[name]} GROUP BY {key}"


def _applied(con: duckdb.DuckDBPyConnection) -> int:
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = "
                       "'schema_migrations'", [ALIAS]).fetchall()[0][0]:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]


def migrate(con: duckdb.DuckDBPyConnection, shown: str, *, read_only: bool) -> None:
    """Brings the lake's schema to this flightrec's: the file store's latest tables without keys,
    session deltas and the views over them. Safe for several processes at once: a lake that another
    made meanwhile is taken as it is."""
    applied = _applied(con)
    if applied > LATEST:
        raise SchemaTooNewError(f"the lake {shown} has schema version {applied}, but this flightrec knows only up to "
                                f"{LATEST}. Upgrade flightrec (pip install -U 'flightrec[lake]').")
    if applied == LATEST:
        return
    if read_only:
        raise StoreError(f"the lake {shown} has no flightrec schema{' this new' if applied else ''} yet, and it is "
                         "open read-only. Open it once for writing (start `flightrec serve --db` on it), then retry.")
    tables = _file_columns()
    try:
        con.execute("BEGIN")
        applied = _applied(con)  # again, in the transaction: another process may have made it meanwhile
        if applied >= LATEST:
            con.execute("COMMIT")
            return
        for name, columns in tables.items():
            if name == "schema_migrations":
                continue
            table = TABLES.get(name, name)
            con.execute(_create_table(table, columns, deltas=name == "sessions"))
            have = {r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
                [ALIAS, table]).fetchall()}
            for column, type_, _, _ in columns:  # a later flightrec's columns, on a lake an earlier one made
                if column not in have:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {type_}")
            names = [c for c, _, _, _ in columns]
            if name == "sessions":
                con.execute(_sessions_view(names))
            elif name in _KEYS:
                con.execute(f"ALTER TABLE {table} SET SORTED BY ({_KEYS[name]})")
                con.execute(_keyed_view(name, _KEYS[name], names))
        con.execute(f"CALL ducklake_set_option('{ALIAS}', 'parquet_row_group_size', {ROW_GROUP})")
        con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        con.execute("INSERT INTO schema_migrations SELECT version, name, now() FROM (VALUES "
                    + ", ".join(f"({m.version}, '{_quoted(m.name)}')" for m in MIGRATIONS if m.version > applied)
                    + ") v(version, name)")
        con.execute("COMMIT")
    except duckdb.Error as exc:
        rollback(con)
        if "conflict" in str(exc).lower():  # another process made the schema meanwhile: take theirs
            return migrate(con, shown, read_only=read_only)
        raise StoreError(f"making flightrec's schema in the lake {shown} failed: {masked(str(exc))}") from None


# -- maintenance -----------------------------------------------------------------------------

KEEP_SNAPSHOTS_S = 24 * 3600
"""How long ``maintain`` keeps the snapshots (and files) that a reader's open query may still need."""
_ORPHANS_AFTER_NS = 3600 * 10**9
"""A file no snapshot lists is removed once it is this old, whatever ``keep_snapshots_s``: younger, it
may belong to a commit still under way."""


@dataclass
class Maintained:
    """What one ``maintain`` round did."""

    sessions_rolled_up: int = 0
    session_deltas_removed: int = 0
    content_duplicates_removed: int = 0
    chain_duplicates_removed: int = 0
    files_before: int = 0
    files_after: int = 0


def _files(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute(f"SELECT coalesce(sum(file_count), 0) FROM ducklake_table_info('{ALIAS}')").fetchall()[0][0])


def _changed(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0] or 0)


def maintain(con: duckdb.DuckDBPyConnection, *, now_ns: int, keep_snapshots_s: float = KEEP_SNAPSHOTS_S) -> Maintained:
    """One maintenance round on a lake, safe while collectors write it.

    Each step is one transaction over the snapshot it began on: it replaces the rows it read
    (a session's deltas by their sum, a key's copies by one) and leaves alone the rows that
    collectors commit meanwhile, which the views add in as before. Then DuckLake's own upkeep:
    small files merged, snapshots older than ``keep_snapshots_s`` expired, their files deleted.
    """
    done = Maintained(files_before=_files(con))
    con.execute("BEGIN")
    try:
        con.execute("CREATE TEMP TABLE _rolled AS SELECT s.*, d.committed_ns FROM sessions s JOIN ("
                    "SELECT session_id, max(committed_ns) AS committed_ns FROM session_deltas GROUP BY session_id "
                    "HAVING count(*) > 1) d USING (session_id)")
        done.sessions_rolled_up = _changed(con, "SELECT count(*) FROM _rolled")
        done.session_deltas_removed = _changed(
            con, "DELETE FROM session_deltas WHERE session_id IN (SELECT session_id FROM _rolled)")
        con.execute("INSERT INTO session_deltas SELECT * FROM _rolled")
        for table, key, field in (("content_rows", "hash", "content_duplicates_removed"),
                                  ("chain_rows", "node", "chain_duplicates_removed")):
            con.execute(f"CREATE TEMP TABLE _once AS SELECT DISTINCT ON ({key}) * FROM {table} WHERE {key} IN "
                        f"(SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1)")
            removed = _changed(con, f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM _once)")
            con.execute(f"INSERT INTO {table} SELECT * FROM _once")
            setattr(done, field, removed - _changed(con, "SELECT count(*) FROM _once"))
            con.execute("DROP TABLE _once")
        con.execute("DROP TABLE _rolled")
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    # Small commits (a recorder's, a few sessions) are kept in the catalog, not in files (DuckLake's
    # data inlining): written out now, so that readers scan files, not catalog rows.
    con.execute(f"CALL ducklake_flush_inlined_data('{ALIAS}')")
    con.execute(f"CALL ducklake_rewrite_data_files('{ALIAS}')")  # files that the roll-up deleted rows of
    con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')")
    older = now_ns - int(keep_snapshots_s * 1e9)
    con.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => make_timestamp({older // 1000}))")
    con.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)")
    # Files no snapshot knows: write checks, and what a writer killed mid-commit left. Only old ones:
    # a commit under way has written files the catalog does not list yet.
    orphaned = min(older, now_ns - _ORPHANS_AFTER_NS)
    con.execute(f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => make_timestamp({orphaned // 1000}))")
    done.files_after = _files(con)
    return done


# -- moving up from a file -------------------------------------------------------------------

IMPORT_SESSIONS = 500
"""Sessions copied in one transaction by ``import_file``: a stopped import keeps what it committed."""
_KEYED = (("eval_runs", "run_id"), ("eval_results", "run_id, case_id, trial"), ("eval_labels", "label"),
          ("alerts", "fingerprint"), ("alert_observations", "fingerprint, observation"),
          ("audit_log", "at_ns, actor, action, target"), ("session_scores", "session_id, scorer"),
          ("session_outcomes", "outcome_id"), ("reviews", "session_id"))
"""The tables copied whole, each row unless the lake has its key already."""
_BY_SESSION = ("spans", "llm_calls", "tool_calls", "turns")


@dataclass
class Imported:
    """What ``import_file`` copied (rows by table); a second run copies only what is new."""

    sessions: int = 0
    rows: dict[str, int] | None = None


def import_file(con: duckdb.DuckDBPyConnection, path: str, *, now_ns: int,
                progress: Callable[[int, int], None] | None = None) -> Imported:
    """Copies the file store at ``path`` into the lake; idempotent and resumable.

    Content goes first (so that every session copied finds its content), then sessions a batch
    at a time, each whole in one transaction with its spans, calls, turns and message chain, then
    evals, alerts and the audit log. What the lake has already (by key) is skipped.
    """
    if not Path(path).exists():
        raise StoreError(f"no trace store at {path} to import. Give the path of a flightrec .duckdb file.")
    try:
        con.execute(f"ATTACH '{_quoted(path)}' AS src (READ_ONLY)")
    except duckdb.Error as exc:
        raise StoreError(f"cannot open {path} to import it: {str(exc).splitlines()[0]} (stop a process that writes "
                         "it, such as `flightrec serve`, first).") from None
    try:
        version = con.execute("SELECT coalesce(max(version), 0) FROM src.schema_migrations").fetchall()[0][0]
        if version != LATEST:
            raise StoreError(f"{path} has schema version {version}, and this flightrec writes {LATEST}. Open it once "
                             f"with this flightrec (for example `flightrec traces list --db {path}`), then import it.")
        rows: dict[str, int] = {}

        def copy(table: str, sql: str) -> None:
            rows[table] = rows.get(table, 0) + _changed(con, sql)

        copy("content", "INSERT INTO content_rows SELECT * FROM src.content ANTI JOIN content USING (hash)")
        todo = [r[0] for r in con.execute(
            "SELECT session_id FROM src.sessions ANTI JOIN sessions USING (session_id) ORDER BY start_ns").fetchall()]
        for i in range(0, len(todo), IMPORT_SESSIONS):
            con.execute("BEGIN")
            try:
                con.execute("CREATE TEMP TABLE _ids AS SELECT unnest($ids) AS session_id",
                            {"ids": todo[i:i + IMPORT_SESSIONS]})
                for table in _BY_SESSION:
                    copy(table, f"INSERT INTO {table} SELECT * FROM src.{table} SEMI JOIN _ids USING (session_id)")
                copy("message_chain", "INSERT INTO chain_rows SELECT * FROM src.message_chain SEMI JOIN _ids USING "
                                      "(session_id)")
                copy("sessions", f"INSERT INTO session_deltas SELECT *, {now_ns} FROM src.sessions SEMI JOIN _ids "
                                 "USING (session_id)")
                con.execute("DROP TABLE _ids")
                con.execute("COMMIT")
            except BaseException:
                rollback(con)
                raise
            if progress is not None:
                progress(min(i + IMPORT_SESSIONS, len(todo)), len(todo))
        copy("spans", "INSERT INTO spans SELECT * FROM src.spans s WHERE s.session_id IS NULL "
                      "AND NOT EXISTS (SELECT 1 FROM spans l WHERE l.trace_id = s.trace_id AND l.span_id = s.span_id)")
        for table, key in _KEYED:
            copy(table, f"INSERT INTO {table} SELECT * FROM src.{table} ANTI JOIN {table} USING ({key})")
        return Imported(sessions=len(todo), rows=rows)
    finally:
        con.execute("DETACH src")
