//! The index: a SQLite projection of the audit chain, for queries.
//!
//! Git is the source of truth; this database can always be deleted and
//! rebuilt from the chain (`gov reindex`). It therefore runs in WAL mode with
//! `synchronous=NORMAL`: a lost tail after a power cut is caught up again
//! from Git on the next open.
//!
//! Every entry goes through [`apply`], which writes the `audit` row and then
//! calls [`project`]: the one place where features add their own tables
//! (proposals, agents and the budget ledger, credentials), each derived only
//! from audit entries, in chain order.
//!
//! `meta` holds `schema_version`, `audit_seq` and `audit_tip` (the last
//! applied entry and its commit). When [`SCHEMA_VERSION`] changes, every table
//! is dropped and rebuilt from Git.

use std::path::Path;

use git2::{Oid, Repository};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::domain::audit::{Actor, AuditEntry, Event, NewEntry, Timestamp};
use crate::store::audit::{commits_after, ChainEntry, ChainTip};
use crate::store::entry_check::EntryCheck;
use crate::store::git::StoreError;
use crate::store::keys::Role;

/// Bump when any table changes shape; the index is then rebuilt from Git.
pub const SCHEMA_VERSION: i64 = 7;

/// The write-ahead log's size (in 4 KiB pages, 64 MiB) past which a commit
/// checkpoints it itself although [`Index::defer_checkpoints`] was asked.
pub const CHECKPOINT_FALLBACK_PAGES: i64 = 16_384;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    commit_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    event_type TEXT NOT NULL,
    agent_id TEXT,
    proposal_id TEXT,
    task_id TEXT,
    payload_json TEXT NOT NULL,
    decision_json TEXT,
    signer_role TEXT
);
CREATE INDEX IF NOT EXISTS audit_agent ON audit(agent_id);
CREATE INDEX IF NOT EXISTS audit_event ON audit(event_type);
CREATE INDEX IF NOT EXISTS audit_proposal ON audit(proposal_id);
";

/// Whether a schema is made with its secondary indexes (`CREATE INDEX`).
#[derive(Clone, Copy)]
enum Indexes {
    Made,
    /// Tables (and the indexes of their keys) only: for a throw-away
    /// projection (see [`Index::projection`]).
    Left,
}

/// `schema` without its `CREATE INDEX` statements.
fn without_indexes(schema: &str) -> String {
    schema
        .split_inclusive(';')
        .filter(|statement| !statement.trim_start().starts_with("CREATE INDEX"))
        .collect()
}

/// The audit table's schema, for tests of the queries over it.
#[cfg(test)]
pub(crate) const SCHEMA_FOR_TESTS: &str = SCHEMA;

/// Writes one entry into the index: its `audit` row, then its projection.
pub fn apply(
    tx: &Connection,
    entry: &AuditEntry,
    commit: Oid,
    signer: Option<Role>,
) -> rusqlite::Result<()> {
    apply_rows(tx, entry, commit, signer)?;
    set_position(tx, entry.seq, commit)
}

/// [`apply`] without moving the index's position: the `audit` row and
/// the entry's projection.
fn apply_rows(
    tx: &Connection,
    entry: &AuditEntry,
    commit: Oid,
    signer: Option<Role>,
) -> rusqlite::Result<()> {
    let row = audit_row(entry, commit, signer)?;
    tx.prepare_cached(
        "INSERT INTO audit (seq, commit_id, ts, actor, event_type, agent_id, proposal_id, task_id,
                            payload_json, decision_json, signer_role)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(rusqlite::params_from_iter(row.iter()))?;
    project(tx, entry)
}

/// [`apply`] without the `audit` row: the entry's projection and the
/// index's position.
fn apply_beyond_audit(tx: &Connection, entry: &AuditEntry, commit: Oid) -> rusqlite::Result<()> {
    project(tx, entry)?;
    set_position(tx, entry.seq, commit)
}

/// Records that the index holds the chain up to entry `seq`, commit
/// `commit`.
fn set_position(tx: &Connection, seq: u64, commit: Oid) -> rusqlite::Result<()> {
    set_meta(tx, "audit_seq", &seq.to_string())?;
    set_meta(tx, "audit_tip", &commit.to_string())
}

/// The `audit` table's columns, in its order.
const AUDIT_COLUMNS: &str = "seq, commit_id, ts, actor, event_type, agent_id, proposal_id, \
                             task_id, payload_json, decision_json, signer_role";

/// The `audit` row an entry gives, column by column ([`AUDIT_COLUMNS`]).
fn audit_row(
    entry: &AuditEntry,
    commit: Oid,
    signer: Option<Role>,
) -> rusqlite::Result<[Value; 11]> {
    let e = &entry.entry;
    let json = |err: serde_json::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(err));
    let payload = serde_json::to_string(&e.event.payload()).map_err(json)?;
    let decision = e
        .decision
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json)?;
    let text = |t: Option<&str>| t.map_or(Value::Null, |t| Value::Text(t.to_owned()));
    Ok([
        Value::Integer(entry.seq as i64),
        Value::Text(commit.to_string()),
        Value::Text(entry.ts.to_rfc3339()),
        Value::Text(e.actor.0.clone()),
        Value::Text(e.event.name().to_owned()),
        text(e.agent_id.as_deref()),
        text(e.proposal_id.as_deref()),
        text(e.task_id.as_deref()),
        Value::Text(payload),
        text(decision.as_deref()),
        text(signer.map(Role::as_str)),
    ])
}

/// EXTENSION POINT: derives feature tables from one entry.
///
/// Add an arm per event type that changes derived state (and its tables to
/// [`SCHEMA`], bumping [`SCHEMA_VERSION`]). It must depend only on the entry
/// and on rows earlier entries wrote, so that a rebuild from Git gives the
/// same tables.
#[allow(
    clippy::match_single_binding,
    reason = "the extension point: features add an arm per event type"
)]
fn project(tx: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    // Proposals, agents and pauses, the ledger, credentials, tokens, runs.
    crate::store::projection::project(tx, entry)
}

fn set_meta(tx: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// A query over the audit table; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub agent_id: Option<String>,
    pub event_type: Option<String>,
    pub proposal_id: Option<String>,
    pub limit: Option<u64>,
    /// Only entries gov wrote itself (actor `server` or `watchdog`): for
    /// gov's own records that it reads back as facts. Since 2026-12-04
    /// nobody can post such a type to `/audit`; a chain written before
    /// may hold one an agent posted, which must not count.
    pub recorded_by_gov: bool,
}

/// The SQL condition on `actor` for entries gov wrote itself (see
/// [`AuditFilter::recorded_by_gov`]; `Actor::is_gov` in Rust).
const BY_GOV: &str = "actor IN ('server', 'watchdog')";

/// The SQL condition on `actor` for entries an agent's token wrote
/// (`Actor::is_agent` in Rust).
const BY_AGENT: &str = "substr(actor, 1, 6) = 'agent:'";

/// One row of the audit table.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedEntry {
    pub entry: AuditEntry,
    pub commit: String,
    pub signer_role: Option<String>,
}

/// How many prepared statements an index connection keeps.
const STATEMENT_CACHE: usize = 128;

/// An open index database.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
}

impl Index {
    /// Opens (creating if needed) the index at `path`, with its schema at the
    /// current version. It may be behind the chain: see [`Index::catch_up`].
    pub fn open(path: &Path) -> Result<Index, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
        }
        // Two processes creating the same new database at once can see
        // SQLITE_BUSY from the journal-mode switch without SQLite calling
        // its busy handler: retry that first contact for a bounded time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Self::open_once(path) {
                Err(StoreError::Index(e))
                    if is_busy(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Index, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        // Every statement a write or a read uses stays prepared: rusqlite
        // keeps 16 by default, fewer than the projection's.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Statement journals and sorts in memory: a temporary file per
        // batch cost a file created and deleted each time.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let mut index = Index { conn };
        index.ensure_schema()?;
        Ok(index)
    }

    /// Opens an existing index without creating or changing anything;
    /// `None` if there is none.
    pub fn open_existing(path: &Path) -> Result<Option<Index>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Some(Index { conn }))
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    fn ensure_schema(&mut self) -> Result<(), StoreError> {
        self.ensure_schema_with(Indexes::Made)
    }

    /// [`Index::ensure_schema`], with or without the secondary indexes.
    fn ensure_schema_with(&mut self, indexes: Indexes) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        let version = get_meta(&tx, "schema_version")?;
        if version.as_deref() != Some(SCHEMA_VERSION.to_string().as_str()) {
            if let Some(found) = &version {
                // At 100,000 entries this takes seconds: say why.
                tracing::warn!(
                    "the index was written by another version of gov (schema {found}, this one {SCHEMA_VERSION}): rebuilding it from the audit chain, which reads every entry once"
                );
            }
            drop_all(&tx)?;
            for schema in [SCHEMA, crate::store::projection::SCHEMA] {
                match indexes {
                    Indexes::Made => tx.execute_batch(schema)?,
                    Indexes::Left => tx.execute_batch(&without_indexes(schema))?,
                }
            }
            set_meta(&tx, "schema_version", &SCHEMA_VERSION.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The last applied entry: its sequence number and commit.
    pub fn position(&self) -> Result<Option<(u64, Oid)>, StoreError> {
        position_in(&self.conn)
    }

    /// How many entries of `types` have an agent's actor (`agent:<id>`),
    /// through the `audit_event` index: as many rows as there are of those
    /// types, not a scan of the chain.
    pub fn count_by_agents(&self, types: &[&str]) -> Result<u64, StoreError> {
        if types.is_empty() {
            return Ok(0);
        }
        let marks = vec!["?"; types.len()].join(", ");
        let sql =
            format!("SELECT count(*) FROM audit WHERE event_type IN ({marks}) AND {BY_AGENT}");
        let n: i64 = self
            .conn
            .query_row(&sql, rusqlite::params_from_iter(types.iter()), |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Applies every chain entry after the index's position, each checked
    /// by `check` first (signature, signer role, sequence: see
    /// `store::trust`). Returns how many entries were applied.
    ///
    /// If the index's tip is no longer on the chain (the chain was moved
    /// back or rewritten) or an entry fails its check, nothing is applied
    /// and the answer is [`StoreError::Tampered`]: the index is kept as it
    /// is, as evidence, never rebuilt silently.
    pub fn catch_up(
        &mut self,
        repo: &Repository,
        refname: &str,
        check: &mut EntryCheck,
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = catch_up_in(&tx, repo, refname, check)?;
        tx.commit()?;
        Ok(n)
    }

    /// Drops every table and rebuilds the index from the chain, each entry
    /// checked, in one transaction: readers see the old index or the new
    /// one, and a chain that fails its checks leaves the old one in place.
    pub fn rebuild(
        &mut self,
        repo: &Repository,
        refname: &str,
        check: &mut EntryCheck,
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        reset(&tx)?;
        let n = catch_up_in(&tx, repo, refname, check)?;
        tx.commit()?;
        Ok(n)
    }

    /// Leaves checkpoints of the write-ahead log to [`Index::checkpoint`],
    /// run by someone else (the server's background pass): by default
    /// SQLite copies the log into the database, and flushes it, inside the
    /// commit that passes 1,000 pages, which held one batch up. The commit
    /// still checkpoints once the log passes [`CHECKPOINT_FALLBACK_PAGES`],
    /// so the log stays bounded if nobody else does.
    pub fn defer_checkpoints(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_FALLBACK_PAGES)?;
        Ok(())
    }

    /// Bounds this connection's page cache to `kib` KiB (SQLite's default
    /// is 2,000 per connection).
    pub fn limit_cache(&self, kib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))?;
        Ok(())
    }

    /// Copies what it can of the write-ahead log into the database without
    /// waiting for readers or writers (a passive checkpoint; writers go on
    /// meanwhile). Returns the log's frames and those now checkpointed.
    pub fn checkpoint(&self) -> Result<(i64, i64), StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }

    /// SQLite's `data_version`: it changes when another connection (another
    /// process, or a hand edit) commits to the file, never for this
    /// connection's own commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Copies the database as it is to `<path>.<why>-<now>` (kept as
    /// evidence) and returns that path.
    pub fn copy_aside(
        &self,
        path: &Path,
        why: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::path::PathBuf, StoreError> {
        let aside = aside_path(path, why, now);
        self.conn
            .execute("VACUUM INTO ?1", [aside.to_string_lossy().as_ref()])?;
        Ok(aside)
    }

    /// Whether a `proposal_decided` or `forge_merge_recorded` entry that
    /// gov wrote records merge `commit` (a merge, squash or rebase) as
    /// reviewed on the forge. A `proposal_decided` entry is only ever
    /// gov's (a state type); a `forge_merge_recorded` one counts only with
    /// gov's actor (see [`AuditFilter::recorded_by_gov`]).
    pub fn forge_merge_recorded(&self, commit: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .query_row(
                &format!(
                    "SELECT 1 FROM audit
                     WHERE (event_type = 'proposal_decided'
                            OR (event_type = 'forge_merge_recorded' AND {BY_GOV}))
                       AND json_extract(payload_json, '$.via') = 'forge'
                       AND json_extract(payload_json, '$.merge_commit') = ?1 LIMIT 1"
                ),
                [commit],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Compares this index with a fresh projection of `entries` (the
    /// chain's entries, oldest first, already checked by the caller, each
    /// with the signer its signature proved) up to this index's position:
    /// the first table that differs and how, or `None` if every table is
    /// equal. An index edited by hand (a proposal set to approved, an agent
    /// un-paused) differs.
    pub fn difference_from_entries(
        &self,
        entries: impl Iterator<Item = Result<ChainEntry, StoreError>>,
    ) -> Result<Option<String>, StoreError> {
        let Some(mut fresh) = self.projection()? else {
            return Ok(None);
        };
        for e in entries {
            if fresh.is_full() {
                break;
            }
            fresh.apply(&e?)?;
        }
        fresh.difference()
    }

    /// The commits of the entries this index holds, from #1 on, when they
    /// are numbered 1, 2, 3, … without a gap; `None` otherwise. Only a
    /// hint, for `gov audit verify` to read the chain without walking it
    /// first: it checks that each commit's first parent is the one before.
    pub fn chain_commits(&self) -> Result<Option<Vec<Oid>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, commit_id FROM audit ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let commit: String = row.get(1)?;
            match Oid::from_str(&commit) {
                Ok(oid) if seq == out.len() as i64 + 1 => out.push(oid),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// An empty projection to compare this index with (see
    /// [`Projection::difference`]), taking entries up to this index's
    /// position; `None` when the index has applied nothing. It is a
    /// throw-away database file (not memory: it holds the whole chain).
    pub fn projection(&self) -> Result<Option<Projection<'_>>, StoreError> {
        let Some((seq, _)) = position_in(&self.conn)? else {
            return Ok(None);
        };
        let file = tempfile::Builder::new()
            .prefix("gov-verify-")
            .suffix(".db")
            .tempfile()
            .map_err(|e| StoreError::io("create", &std::env::temp_dir(), e))?;
        let mut fresh = Index {
            conn: Connection::open(file.path())?,
        };
        // Thrown away at the end: nothing to journal or flush. Its pages
        // are kept in memory up to 16 MiB: with SQLite's default 2 MiB,
        // a history of proposals spilled pages to the file and read them
        // back for each later entry.
        fresh.conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16384;",
        )?;
        // Its rows are written and compared, never looked up by anything
        // but their keys: the secondary indexes, which readers of the live
        // index need, would only be kept up to date for nothing.
        fresh.ensure_schema_with(Indexes::Left)?;
        fresh.conn.execute_batch("BEGIN")?;
        // The `audit` table, most of the index, is compared row by row as
        // the entries come, not copied: unless its columns are not the
        // ones gov makes (then it is copied and compared as the others).
        let columns = |conn: &Connection| -> rusqlite::Result<Vec<(String, i64)>> {
            let mut stmt = conn.prepare("PRAGMA table_info(audit)")?;
            let rows = stmt.query_map([], |r| Ok((r.get(1)?, r.get(5)?)))?;
            rows.collect()
        };
        let live_columns = columns(&self.conn)?;
        let audit = (!live_columns.is_empty() && live_columns == columns(&fresh.conn)?)
            .then(AuditRows::default);
        Ok(Some(Projection {
            live: self,
            fresh,
            file,
            limit: seq,
            applied: 0,
            audit,
        }))
    }

    /// Starts the transaction that holds one batch's rows: the batch's
    /// writers read their own and earlier writers' rows through this
    /// connection, other connections see none of them until
    /// [`Index::commit_batch`].
    pub fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// How many rows this connection has changed since it was opened: a
    /// batch compares it around a writer that failed, to know whether the
    /// writer's rows must be undone ([`Index::redo_batch`]).
    pub fn changes(&self) -> u64 {
        self.conn.total_changes()
    }

    /// Undoes every row of the open batch and applies `kept` (the entries
    /// of the batch's writers that stay, oldest first) again: how a writer
    /// that failed after changing rows is undone alone. A writer's rows
    /// are not fenced by a savepoint of their own: it made SQLite copy
    /// every page a writer touched first (a tenth of the writer's turn),
    /// and writers almost never fail once their rows are written.
    pub fn redo_batch(&mut self, kept: &[ChainEntry]) -> Result<(), StoreError> {
        self.rollback_batch();
        self.begin_batch()?;
        self.apply_staged(kept)
    }

    /// Applies entries staged in the batch (after the index's position).
    pub fn apply_staged(&self, written: &[ChainEntry]) -> Result<(), StoreError> {
        // The position moves once, when the batch commits.
        for w in written {
            apply_rows(&self.conn, &w.entry, w.commit, w.signer)?;
        }
        Ok(())
    }

    /// Commits the batch's rows, and the index's position at its last
    /// entry, `last` (SQLite does not fsync each commit here: the index is
    /// rebuilt from Git if a tail is lost). A batch whose rows were rolled
    /// back (they could not be redone) has no transaction left: its
    /// position is not written either, so the rows are caught up from Git.
    pub fn commit_batch(&mut self, last: Option<&ChainTip>) -> Result<(), StoreError> {
        if let Some(tip) = last.filter(|_| !self.conn.is_autocommit()) {
            set_position(&self.conn, tip.seq, tip.commit)?;
        }
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Drops the batch's rows, if a batch is open.
    pub fn rollback_batch(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Audit rows, newest first.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<IndexedEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, commit_id, ts, actor, event_type, agent_id, proposal_id, task_id,
                    payload_json, decision_json, signer_role FROM audit WHERE 1=1",
        );
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(a) = &filter.agent_id {
            sql.push_str(" AND agent_id = ?");
            args.push(a);
        }
        if let Some(e) = &filter.event_type {
            sql.push_str(" AND event_type = ?");
            args.push(e);
        }
        if let Some(p) = &filter.proposal_id {
            sql.push_str(" AND proposal_id = ?");
            args.push(p);
        }
        if filter.recorded_by_gov {
            sql.push_str(" AND ");
            sql.push_str(BY_GOV);
        }
        sql.push_str(" ORDER BY seq DESC");
        let limit = filter.limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        sql.push_str(" LIMIT ?");
        args.push(&limit);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(args.as_slice(), row_to_entry)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

pub(crate) const SQL_SUBMITTED_COMMIT: &str =
    "SELECT commit_id FROM audit WHERE proposal_id = ?1 AND event_type = 'proposal_submitted'
     ORDER BY seq LIMIT 1";

/// The commit of the audit entry that recorded a proposal's submission:
/// for an auto-approved proposal, the only record of it in Git.
pub fn submitted_commit(conn: &Connection, proposal_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(SQL_SUBMITTED_COMMIT)?
        .query_row([proposal_id], |r| r.get(0))
        .optional()
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<IndexedEntry> {
    let conv = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let ts: String = r.get(2)?;
    let ts = chrono::DateTime::parse_from_rfc3339(&ts).map_err(|e| conv(2, Box::new(e)))?;
    let payload: String = r.get(8)?;
    let decision: Option<String> = r.get(9)?;
    let payload = serde_json::from_str(&payload).map_err(|e| conv(8, Box::new(e)))?;
    let entry = NewEntry {
        actor: Actor(r.get(3)?),
        event: Event::from_parts(r.get(4)?, payload),
        agent_id: r.get(5)?,
        proposal_id: r.get(6)?,
        task_id: r.get(7)?,
        decision: decision
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| conv(9, Box::new(e)))?,
    };
    let seq: i64 = r.get(0)?;
    Ok(IndexedEntry {
        entry: AuditEntry {
            seq: seq.max(0) as u64,
            ts: Timestamp(ts.with_timezone(&chrono::Utc)),
            entry,
        },
        commit: r.get(1)?,
        signer_role: r.get(10)?,
    })
}

/// Every row of `table`, as text, sorted.
/// A fresh projection of the chain's entries, built one entry at a time
/// (oldest first) in a throw-away database to compare an index with; it
/// takes entries up to the index's position and ignores the rest.
pub struct Projection<'i> {
    /// The index it is compared with.
    live: &'i Index,
    fresh: Index,
    file: tempfile::NamedTempFile,
    limit: u64,
    applied: u64,
    /// The live `audit` table's rows as compared so far; `None` when the
    /// rows are copied into `fresh` instead.
    audit: Option<AuditRows>,
}

impl Projection<'_> {
    /// Whether it holds every entry up to the index's position.
    pub fn is_full(&self) -> bool {
        self.applied >= self.limit
    }

    /// Projects the next entry (checked by the caller, with the signer its
    /// signature proved), unless the projection is full; its `audit` row is
    /// compared with the index's.
    pub fn apply(&mut self, e: &ChainEntry) -> Result<(), StoreError> {
        if self.is_full() {
            return Ok(());
        }
        match &mut self.audit {
            Some(rows) => {
                rows.compare(&self.live.conn, audit_row(&e.entry, e.commit, e.signer)?);
                apply_beyond_audit(&self.fresh.conn, &e.entry, e.commit)?;
            }
            None => apply(&self.fresh.conn, &e.entry, e.commit, e.signer)?,
        }
        self.applied += 1;
        Ok(())
    }

    /// The first table of the index that differs from this projection and
    /// how, or `None` if every table is equal (the same rows, each as many
    /// times).
    pub fn difference(self) -> Result<Option<String>, StoreError> {
        let Projection {
            live,
            fresh: db,
            file,
            audit,
            ..
        } = self;
        db.conn.execute_batch("COMMIT")?;
        let tables: Vec<(String, usize)> = db
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
            .query_map([], |r| r.get::<_, String>(0))?
            .map(|name| {
                let name = name?;
                let columns = db
                    .conn
                    .prepare(&format!("SELECT * FROM {}", quoted(&name)))?
                    .column_count();
                Ok((name, columns))
            })
            .collect::<rusqlite::Result<_>>()?;
        drop(db);
        let conn = &live.conn;
        let audit = audit.map(|rows| rows.finish(conn));
        conn.execute(
            "ATTACH DATABASE ?1 AS fresh",
            [file.path().to_string_lossy().as_ref()],
        )?;
        let result = tables
            .iter()
            .find_map(|(table, columns)| match (table.as_str(), &audit) {
                ("audit", Some(found)) => found.clone().map(Ok),
                _ => table_difference(conn, table, *columns).transpose(),
            })
            .transpose();
        conn.execute_batch("DETACH DATABASE fresh")?;
        result
    }
}

/// The live index's `audit` rows, read in order of `seq` a few hundred at
/// a time and compared with the rows the chain's entries give, as a
/// comparison of the whole table would: the first row only the index
/// holds (by `seq`), else the first row only the chain gives.
#[derive(Default)]
struct AuditRows {
    /// Read, not compared yet.
    read: std::collections::VecDeque<[Value; 11]>,
    /// The last `seq` read.
    read_through: i64,
    /// Every row has been read.
    all_read: bool,
    /// The first row the index holds and the chain does not give.
    extra: Option<String>,
    /// The first row the chain gives and the index lacks.
    lacking: Option<String>,
    /// Why the table could not be read.
    unreadable: Option<String>,
}

impl AuditRows {
    /// Rows read at a time.
    const READ: i64 = 256;

    /// Compares the chain's next row with the index's.
    fn compare(&mut self, conn: &Connection, given: [Value; 11]) {
        let seq = row_seq(&given);
        loop {
            if self.read.is_empty() && !self.read_more(conn) {
                break;
            }
            let Some(held) = self.read.pop_front() else {
                break;
            };
            let held_seq = row_seq(&held);
            if held_seq > seq {
                self.read.push_front(held);
                break;
            }
            if held_seq == seq && held == given {
                return;
            }
            self.extra.get_or_insert_with(|| row_text(&held));
            if held_seq == seq {
                break;
            }
        }
        self.lacking.get_or_insert_with(|| row_text(&given));
    }

    /// Reads the next rows; whether any came.
    fn read_more(&mut self, conn: &Connection) -> bool {
        if self.all_read || self.unreadable.is_some() {
            return false;
        }
        let read = (|| -> rusqlite::Result<Vec<[Value; 11]>> {
            let sql =
                format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![self.read_through, Self::READ], |r| {
                let mut row = [const { Value::Null }; 11];
                for (i, cell) in row.iter_mut().enumerate() {
                    *cell = r.get(i)?;
                }
                Ok(row)
            })?;
            rows.collect()
        })();
        match read {
            Ok(rows) => {
                self.all_read = (rows.len() as i64) < Self::READ;
                if let Some(last) = rows.last() {
                    self.read_through = row_seq(last);
                }
                self.read.extend(rows);
                !self.read.is_empty()
            }
            Err(e) => {
                self.unreadable = Some(e.to_string());
                false
            }
        }
    }

    /// How the table differs, once every entry was compared: any row left
    /// in the index is one the chain does not give.
    fn finish(mut self, conn: &Connection) -> Option<String> {
        if self.extra.is_none() && (!self.read.is_empty() || self.read_more(conn)) {
            self.extra = self.read.front().map(|r| row_text(r));
        }
        let detail = match (self.unreadable, self.extra, self.lacking) {
            (Some(e), _, _) => return Some(format!("table `audit` cannot be read: {e}")),
            (None, Some(r), _) => format!("it holds a row the chain does not give: {r}"),
            (None, None, Some(r)) => format!("it lacks a row the chain gives: {r}"),
            (None, None, None) => return None,
        };
        Some(format!("table `audit` differs from the chain: {detail}"))
    }
}

/// The `seq` of an `audit` row (its first column, an integer key).
fn row_seq(row: &[Value; 11]) -> i64 {
    match row[0] {
        Value::Integer(seq) => seq,
        _ => i64::MIN,
    }
}

/// A row as a difference names it: `(Integer(2), Text("…"), Null)`.
fn row_text(cells: &[Value]) -> String {
    let cells: Vec<String> = cells.iter().map(|v| format!("{v:?}")).collect();
    format!("({})", cells.join(", "))
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How table `table` of `conn` differs from the same table of the
/// attached database `fresh` (`columns` columns): a row only one of them
/// holds, or rows held a different number of times; `None` if equal.
///
/// A table with a primary key (every table gov makes has one) is compared
/// by looking each row up by its key on the other side, which costs one
/// index search per row. A table without one, or whose key holds a NULL
/// (then rows can repeat), is compared as two multisets of rows, which
/// sorts every row several times.
fn table_difference(
    conn: &Connection,
    table: &str,
    columns: usize,
) -> Result<Option<String>, StoreError> {
    let t = quoted(table);
    let first_row = |sql: &str| -> rusqlite::Result<Option<String>> {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        stmt.query_row([], |r| {
            let cells = (0..n)
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(row_text(&cells))
        })
        .optional()
    };
    let differs = |detail: String| {
        Ok(Some(format!(
            "table `{table}` differs from the chain: {detail}"
        )))
    };
    let keyed = match keyed_columns(conn, table) {
        Ok(k) => k,
        Err(e) => return Ok(Some(format!("table `{table}` cannot be read: {e}"))),
    };
    let (extra_sql, lacking_sql) = match &keyed {
        Some(KeyedColumns::Differ) => return differs("its columns are not the chain's".into()),
        Some(KeyedColumns::Keyed(cols)) => {
            // Every column equal (`IS`: NULL equals NULL), keys first so
            // the search uses the key's index.
            let same = |a: &str, b: &str| {
                cols.iter()
                    .map(|c| format!("{b}.{c} IS {a}.{c}", c = quoted(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            let missing_from = |db: &str, other: &str| {
                format!(
                    "SELECT a.* FROM {db}.{t} AS a WHERE NOT EXISTS \
                     (SELECT 1 FROM {other}.{t} AS b WHERE {}) LIMIT 1",
                    same("a", "b")
                )
            };
            (missing_from("main", "fresh"), missing_from("fresh", "main"))
        }
        None => (
            format!("SELECT * FROM main.{t} EXCEPT SELECT * FROM fresh.{t}"),
            format!("SELECT * FROM fresh.{t} EXCEPT SELECT * FROM main.{t}"),
        ),
    };
    let extra = match first_row(&extra_sql) {
        Ok(row) => row,
        Err(e) => return Ok(Some(format!("table `{table}` cannot be read: {e}"))),
    };
    if let Some(r) = extra {
        return differs(format!("it holds a row the chain does not give: {r}"));
    }
    // Keyed: keys are unique and never NULL on both sides, and every row
    // of the index has its equal in the projection, so the projection
    // lacks none exactly when both hold as many rows (counting them spares
    // looking each of the projection's rows up in the index).
    let counts = match keyed {
        Some(_) => {
            let count = |db: &str| {
                conn.query_row(&format!("SELECT count(*) FROM {db}.{t}"), [], |r| {
                    r.get::<_, i64>(0)
                })
            };
            let counts = (count("main")?, count("fresh")?);
            if counts.0 == counts.1 {
                return Ok(None);
            }
            Some(counts)
        }
        None => None,
    };
    if let Some(r) = first_row(&lacking_sql)? {
        return differs(format!("it lacks a row the chain gives: {r}"));
    }
    if let Some((held, given)) = counts {
        // Cannot be, with unique keys; said rather than passed.
        return differs(format!("it holds {held} rows, the chain gives {given}"));
    }
    let all = (1..=columns)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let counted = |db: &str| format!("SELECT *, count(*) FROM {db}.{t} GROUP BY {all}");
    let repeated = first_row(&format!(
        "SELECT 1 FROM ({} EXCEPT {}) UNION ALL SELECT 1 FROM ({} EXCEPT {}) LIMIT 1",
        counted("main"),
        counted("fresh"),
        counted("fresh"),
        counted("main")
    ))?
    .is_some();
    if repeated {
        return differs("its rows repeat differently".into());
    }
    Ok(None)
}

/// How a table can be compared row by row with its fresh twin.
enum KeyedColumns {
    /// Its columns, primary key first, the same on both sides.
    Keyed(Vec<String>),
    /// The two sides do not have the same columns.
    Differ,
}

/// The columns of `table` (primary key first) when the fresh table has a
/// primary key and neither side holds a NULL in it; `None`: compare it as
/// a multiset of rows.
fn keyed_columns(conn: &Connection, table: &str) -> rusqlite::Result<Option<KeyedColumns>> {
    let columns = |db: &str| -> rusqlite::Result<Vec<(String, i64)>> {
        let mut stmt = conn.prepare(&format!("PRAGMA {db}.table_info({})", quoted(table)))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?;
        rows.collect()
    };
    let (fresh, main) = (columns("fresh")?, columns("main")?);
    if main.is_empty() {
        // No such table: the plain comparison says so.
        return Ok(None);
    }
    if fresh != main {
        return Ok(Some(KeyedColumns::Differ));
    }
    let mut key: Vec<&(String, i64)> = fresh.iter().filter(|(_, pk)| *pk > 0).collect();
    if key.is_empty() {
        return Ok(None);
    }
    key.sort_by_key(|(_, pk)| *pk);
    let null_key = key
        .iter()
        .map(|(c, _)| format!("{} IS NULL", quoted(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    for db in ["main", "fresh"] {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {db}.{} WHERE {null_key})",
            quoted(table)
        );
        if conn.query_row(&sql, [], |r| r.get::<_, bool>(0))? {
            return Ok(None);
        }
    }
    let mut cols: Vec<String> = key.iter().map(|(c, _)| c.clone()).collect();
    cols.extend(
        fresh
            .iter()
            .filter(|(_, pk)| *pk == 0)
            .map(|(c, _)| c.clone()),
    );
    Ok(Some(KeyedColumns::Keyed(cols)))
}

/// The last entry applied to the index behind `conn`: its sequence number
/// and commit.
fn position_in(conn: &Connection) -> Result<Option<(u64, Oid)>, StoreError> {
    let seq = get_meta(conn, "audit_seq")?.and_then(|s| s.parse::<u64>().ok());
    let tip = get_meta(conn, "audit_tip")?.and_then(|s| Oid::from_str(&s).ok());
    Ok(seq.zip(tip))
}

fn catch_up_in(
    tx: &Transaction<'_>,
    repo: &Repository,
    refname: &str,
    check: &mut EntryCheck,
) -> Result<usize, StoreError> {
    let pos = position_in(tx)?;
    let (seq, tip) = pos.map_or((0, None), |(s, t)| (s, Some(t)));
    let oids = match commits_after(repo, refname, seq, tip) {
        Ok(Some(oids)) => oids,
        Ok(None) => {
            return Err(StoreError::Tampered(format!(
                "the index's last entry #{seq}{} is no longer on the audit chain: the chain was moved back or rewritten",
                tip.map(|t| format!(" (commit {})", &t.to_string()[..12])).unwrap_or_default()
            )))
        }
        // A commit on the chain that is not an entry at all.
        Err(StoreError::BadEntry { commit, reason }) => {
            return Err(StoreError::Tampered(format!("commit {commit}: {reason}")))
        }
        Err(e) => return Err(e),
    };
    let mut after = pos;
    for oid in &oids {
        let e = check.check(repo, *oid, after)?;
        apply(tx, &e.entry, e.commit, e.signer)?;
        after = Some((e.entry.seq, e.commit));
    }
    Ok(oids.len())
}

/// Empties the index: every table dropped and created again.
fn reset(tx: &Transaction<'_>) -> Result<(), StoreError> {
    drop_all(tx)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(crate::store::projection::SCHEMA)?;
    set_meta(tx, "schema_version", &SCHEMA_VERSION.to_string())?;
    Ok(())
}

fn drop_all(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let tables: Vec<String> = tx
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'meta'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for t in tables {
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS \"{}\"",
            t.replace('"', "\"\"")
        ))?;
    }
    tx.execute("DELETE FROM meta", [])?;
    Ok(())
}

/// Whether SQLite says the file is not a database or is damaged (as
/// opposed to busy or missing).
pub fn is_unreadable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Where an index file at `path` is kept when set aside for `why` at `now`:
/// `<path>.<why>-<time>`.
fn aside_path(path: &Path, why: &str, now: chrono::DateTime<chrono::Utc>) -> std::path::PathBuf {
    let stamp = now.format("%Y%m%dT%H%M%S%.6fZ");
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{why}-{stamp}"));
    std::path::PathBuf::from(aside)
}

/// Moves the index at `path` (and its WAL and shared-memory files) to
/// `<path>.<why>-<time>` (`now`), keeping it for inspection. Returns the
/// new path.
pub fn move_aside(
    path: &Path,
    why: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<std::path::PathBuf, StoreError> {
    let aside = aside_path(path, why, now);
    for suffix in ["", "-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let from = std::path::PathBuf::from(from);
        if from.exists() {
            let mut to = aside.as_os_str().to_owned();
            to.push(suffix);
            std::fs::rename(&from, &to).map_err(|e| StoreError::io("move aside", &from, e))?;
        }
    }
    Ok(aside)
}

/// Whether SQLite answered "busy" or "locked".
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection with an empty `fresh` database attached (kept in the
    /// returned folder).
    fn attached() -> Result<(tempfile::TempDir, Connection), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let conn = Connection::open_in_memory()?;
        let fresh = dir.path().join("fresh.db");
        conn.execute(
            "ATTACH DATABASE ?1 AS fresh",
            [fresh.to_string_lossy().as_ref()],
        )?;
        Ok((dir, conn))
    }

    /// How an index of 600 entries, edited by `edit`, differs from the
    /// chain's entries.
    fn edited_index_differs(edit: &str) -> Result<Option<String>, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = Index::open(&dir.path().join("index.sqlite"))?;
        let ts = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")?.to_utc();
        let entries = (1..=600u64)
            .map(|seq| {
                let event = Event::other("note", serde_json::json!({ "n": seq }))?;
                Ok(ChainEntry {
                    commit: Oid::from_str(&format!("{seq:040x}"))?,
                    entry: NewEntry::new(Actor::server(), event)
                        .agent("noop")
                        .place(seq, ts),
                    signer: Some(Role::Server),
                })
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        index.conn.execute_batch("BEGIN")?;
        for e in &entries {
            apply(&index.conn, &e.entry, e.commit, e.signer)?;
        }
        index.conn.execute_batch("COMMIT")?;
        index.conn.execute_batch(edit)?;
        Ok(index.difference_from_entries(entries.into_iter().map(Ok))?)
    }

    /// gov's own records count only with gov's actor: one an agent posted
    /// (possible before gov refused those types at `/audit`) is listed, but
    /// not read back as a fact.
    #[test]
    fn records_read_back_as_facts_are_gov_s_own() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = Index::open(&dir.path().join("index.sqlite"))?;
        let ts = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")?.to_utc();
        let merges = ["a", "b", "c"].map(|c| c.repeat(40));
        let actors = [Actor::server(), Actor::watchdog(), Actor::agent("noop")];
        index.conn.execute_batch("BEGIN")?;
        for (i, (actor, merge)) in actors.into_iter().zip(&merges).enumerate() {
            let seq = i as u64 + 1;
            let event = Event::from_parts(
                "forge_merge_recorded".into(),
                serde_json::json!({"via": "forge", "merge_commit": merge}),
            );
            let entry = NewEntry::new(actor, event).agent("noop").place(seq, ts);
            apply(
                &index.conn,
                &entry,
                Oid::from_str(&format!("{seq:040x}"))?,
                None,
            )?;
        }
        index.conn.execute_batch("COMMIT")?;
        let listed = |recorded_by_gov| -> Result<Vec<String>, StoreError> {
            let filter = AuditFilter {
                event_type: Some("forge_merge_recorded".into()),
                recorded_by_gov,
                ..AuditFilter::default()
            };
            Ok(index
                .query(&filter)?
                .into_iter()
                .map(|e| e.entry.entry.actor.0)
                .collect())
        };
        assert_eq!(listed(false)?, ["agent:noop", "watchdog", "server"]);
        assert_eq!(listed(true)?, ["watchdog", "server"]);
        let recorded = merges
            .iter()
            .map(|m| index.forge_merge_recorded(m))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(recorded, [true, true, false]);
        Ok(())
    }

    /// The throw-away projection has every table of the index, column for
    /// column with the same keys, and none of its secondary indexes.
    #[test]
    fn a_projection_has_the_tables_without_the_secondary_indexes(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let live = Index::open(&dir.path().join("index.sqlite"))?;
        // As `Index::projection` makes it.
        let mut fresh = Index {
            conn: Connection::open(dir.path().join("fresh.sqlite"))?,
        };
        fresh.ensure_schema_with(Indexes::Left)?;
        let schema = |conn: &Connection, kind: &str| -> rusqlite::Result<Vec<(String, String)>> {
            let mut stmt = conn.prepare(
                "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let tables = schema(&live.conn, "table")?;
        assert!(tables.len() >= 9, "{tables:?}");
        assert_eq!(schema(&fresh.conn, "table")?, tables);
        let indexes = |conn: &Connection| -> rusqlite::Result<(usize, usize)> {
            let all = schema(conn, "index")?;
            let made = all
                .iter()
                .filter(|(n, _)| !n.starts_with("sqlite_autoindex"))
                .count();
            Ok((all.len() - made, made))
        };
        let (keys, made) = indexes(&live.conn)?;
        assert!(made >= 10, "the live index has {made} secondary indexes");
        assert_eq!(indexes(&fresh.conn)?, (keys, 0));
        Ok(())
    }

    #[test]
    fn the_audit_table_is_compared_row_by_row_as_entries_come(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let differs = |detail: &str| format!("table `audit` differs from the chain: {detail}");
        let row = |seq: u64, actor: &str| {
            format!(
                "(Integer({seq}), Text(\"{seq:040x}\"), Text(\"2026-12-01T10:00:00.000000+00:00\"), \
                 Text(\"{actor}\"), Text(\"note\"), Text(\"noop\"), Null, Null, \
                 Text(\"{{\\\"n\\\":{seq}}}\"), Null, Text(\"server\"))"
            )
        };
        assert_eq!(edited_index_differs("")?, None);
        // Past the first rows read (256 at a time).
        assert_eq!(
            edited_index_differs("UPDATE audit SET actor = 'operator:eve' WHERE seq = 300")?,
            Some(differs(&format!(
                "it holds a row the chain does not give: {}",
                row(300, "operator:eve")
            )))
        );
        assert_eq!(
            edited_index_differs("DELETE FROM audit WHERE seq = 300")?,
            Some(differs(&format!(
                "it lacks a row the chain gives: {}",
                row(300, "server")
            )))
        );
        // A row only the index holds is named first, wherever it is.
        assert_eq!(
            edited_index_differs(
                "DELETE FROM audit WHERE seq = 3; UPDATE audit SET seq = 9999 WHERE seq = 600"
            )?,
            Some(differs(&format!(
                "it holds a row the chain does not give: {}",
                row(600, "server").replacen("Integer(600)", "Integer(9999)", 1)
            )))
        );
        assert_eq!(
            edited_index_differs(
                "INSERT INTO audit SELECT seq + 1, commit_id, ts, actor, event_type, agent_id, \
                 proposal_id, task_id, payload_json, decision_json, signer_role \
                 FROM audit WHERE seq = 600"
            )?,
            Some(differs(&format!(
                "it holds a row the chain does not give: {}",
                row(600, "server").replacen("Integer(600)", "Integer(601)", 1)
            )))
        );
        // A table gov did not make is compared as the other tables are.
        assert_eq!(
            edited_index_differs("ALTER TABLE audit ADD COLUMN note TEXT")?,
            Some(differs("its columns are not the chain's"))
        );
        Ok(())
    }

    #[test]
    fn a_table_is_compared_by_its_rows_and_how_often_each_comes(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, conn) = attached()?;
        conn.execute_batch(
            "CREATE TABLE main.t (a, b); CREATE TABLE fresh.t (a, b);
             INSERT INTO main.t VALUES (1, 'x'), (1, 'x'), (2, 'y');
             INSERT INTO fresh.t VALUES (1, 'x'), (2, 'y'), (2, 'y');",
        )?;
        let differs = |detail: &str| Some(format!("table `t` differs from the chain: {detail}"));
        assert_eq!(
            table_difference(&conn, "t", 2)?,
            differs("its rows repeat differently")
        );
        conn.execute_batch("DELETE FROM fresh.t WHERE a = 2")?;
        assert_eq!(
            table_difference(&conn, "t", 2)?,
            differs("it holds a row the chain does not give: (Integer(2), Text(\"y\"))")
        );
        conn.execute_batch("DELETE FROM main.t; INSERT INTO main.t VALUES (1, 'x')")?;
        assert_eq!(table_difference(&conn, "t", 2)?, None);
        conn.execute_batch("INSERT INTO fresh.t VALUES (3, NULL)")?;
        assert_eq!(
            table_difference(&conn, "t", 2)?,
            differs("it lacks a row the chain gives: (Integer(3), Null)")
        );
        conn.execute_batch("DROP TABLE main.t")?;
        assert!(table_difference(&conn, "t", 2)?
            .is_some_and(|why| why.starts_with("table `t` cannot be read: ")));
        Ok(())
    }

    #[test]
    fn a_table_with_a_key_is_compared_row_by_row_through_its_key(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, conn) = attached()?;
        conn.execute_batch(
            "CREATE TABLE main.k (id TEXT PRIMARY KEY, n INTEGER, note TEXT);
             CREATE TABLE fresh.k (id TEXT PRIMARY KEY, n INTEGER, note TEXT);
             INSERT INTO main.k VALUES ('a', 1, NULL), ('b', 2, 'x');
             INSERT INTO fresh.k VALUES ('a', 1, NULL), ('b', 2, 'x');",
        )?;
        let differs = |detail: &str| Some(format!("table `k` differs from the chain: {detail}"));
        assert_eq!(table_difference(&conn, "k", 3)?, None);
        // A changed cell: the index's row is not the chain's.
        conn.execute_batch("UPDATE main.k SET note = 'y' WHERE id = 'b'")?;
        assert_eq!(
            table_difference(&conn, "k", 3)?,
            differs(
                "it holds a row the chain does not give: (Text(\"b\"), Integer(2), Text(\"y\"))"
            )
        );
        conn.execute_batch(
            "UPDATE main.k SET note = 'x' WHERE id = 'b'; DELETE FROM main.k WHERE id = 'a'",
        )?;
        assert_eq!(
            table_difference(&conn, "k", 3)?,
            differs("it lacks a row the chain gives: (Text(\"a\"), Integer(1), Null)")
        );
        conn.execute_batch("INSERT INTO main.k VALUES ('a', 1, NULL), ('c', 3, NULL)")?;
        assert_eq!(
            table_difference(&conn, "k", 3)?,
            differs("it holds a row the chain does not give: (Text(\"c\"), Integer(3), Null)")
        );
        // A NULL key lets rows repeat: compared as multisets of rows.
        conn.execute_batch(
            "DELETE FROM main.k WHERE id = 'c';
             INSERT INTO main.k VALUES (NULL, 4, 'z'), (NULL, 4, 'z');
             INSERT INTO fresh.k VALUES (NULL, 4, 'z');",
        )?;
        assert_eq!(
            table_difference(&conn, "k", 3)?,
            differs("its rows repeat differently")
        );
        // Other columns than the chain's.
        conn.execute_batch(
            "DROP TABLE main.k; CREATE TABLE main.k (id TEXT PRIMARY KEY, n INTEGER, extra TEXT)",
        )?;
        assert_eq!(
            table_difference(&conn, "k", 3)?,
            differs("its columns are not the chain's")
        );
        Ok(())
    }
}
