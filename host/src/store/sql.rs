//! One SQL layer for every engine. The store's roles (rules, directory, alerts, accounts and
//! audit, operations, catch-up) are written once against [`Sql`]: a statement with its bound
//! [`Arg`]s, run on a pool or inside a transaction, rows read through [`Columns`]. Each engine
//! supplies only what really differs: how a statement is bound and run (sqlx's typed query
//! per database), and the [`Dialect`] (upsert syntax, insert-or-ignore, the insertion-order
//! column, limits on bound values).
//!
//! The hot ingest path (`write_batch`) and the chunked retention deletes stay engine-specific:
//! they are where the engines' limits and delete syntax differ, and where a layer of dynamic
//! arguments would cost throughput.

use super::rows::Columns;
use super::{BoxFuture, StoreError};
use std::borrow::Cow;

/// The SQL differences between the engines, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
}

impl Dialect {
    /// The clause that makes an `INSERT … VALUES …` skip rows whose key (`key`, a column of
    /// it) is already present. Not MySQL's `INSERT IGNORE`: that also turns truncation and
    /// other errors into warnings. Rows affected do not tell a skip from an insert on MySQL
    /// (the client asks for found rows): callers that need to know check first.
    pub fn ignore_duplicate(self, key: &str) -> String {
        match self {
            Dialect::Sqlite => " ON CONFLICT DO NOTHING".to_owned(),
            Dialect::MySql => format!(" ON DUPLICATE KEY UPDATE {key} = {key}"),
        }
    }

    /// The clause that turns an `INSERT … VALUES …` into an upsert on `keys`, overwriting
    /// `columns` with the inserted values.
    pub fn upsert(self, keys: &[&str], columns: &[&str]) -> String {
        match self {
            Dialect::Sqlite => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    keys.join(", "),
                    set.join(", ")
                )
            }
            Dialect::MySql => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
        }
    }

    /// The column that orders rows of the older tables by insertion (`rowid` in SQLite, an
    /// explicit auto-increment `Seq` in MySQL).
    pub fn seq(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::MySql => "Seq",
        }
    }

    /// Bound values one statement may carry.
    pub fn max_binds(self) -> usize {
        match self {
            Dialect::Sqlite => 32_766,
            Dialect::MySql => 65_535,
        }
    }
}

/// A bound value, engine-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<Cow<'a, str>>),
    Blob(Cow<'a, [u8]>),
}

impl Arg<'_> {
    /// An id column (stored signed; ids are at most `i64::MAX`, checked where they enter).
    pub fn id(v: u64) -> Arg<'static> {
        Arg::Int(Some(v as i64))
    }

    pub fn opt_id(v: Option<u64>) -> Arg<'static> {
        Arg::Int(v.map(|v| v as i64))
    }

    /// Bytes this value adds to a statement, for packet budgets.
    pub fn size(&self) -> usize {
        match self {
            Arg::Int(_) | Arg::Real(_) => 8,
            Arg::Text(t) => t.as_ref().map_or(0, |t| t.len()),
            Arg::Blob(b) => b.len(),
        }
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Real(Some(v))
    }
}
impl From<Option<f64>> for Arg<'_> {
    fn from(v: Option<f64>) -> Self {
        Arg::Real(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}
impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Some(Cow::Owned(v)))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v.map(Cow::Borrowed))
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref().map(Cow::Borrowed))
    }
}
impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v.map(Cow::Owned))
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(Cow::Borrowed(v))
    }
}

/// A row of any engine.
pub type Row = Box<dyn Columns + Send + Sync>;

/// A statement and its arguments.
#[derive(Debug, Clone)]
pub struct Q<'a> {
    pub sql: Cow<'a, str>,
    pub args: Vec<Arg<'a>>,
    /// The text is built per call (an `IN (…)` list of varying length): engines that cache
    /// prepared statements should not cache this one.
    pub transient: bool,
}

/// A statement to bind and run.
pub fn q<'a>(sql: impl Into<Cow<'a, str>>) -> Q<'a> {
    Q {
        sql: sql.into(),
        args: Vec::new(),
        transient: false,
    }
}

impl<'a> Q<'a> {
    pub fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Binds every value in order.
    pub fn bind_all(mut self, args: impl IntoIterator<Item = Arg<'a>>) -> Self {
        self.args.extend(args);
        self
    }

    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    pub async fn fetch_all(self, c: &mut (dyn Sql + '_)) -> Result<Vec<Row>, StoreError> {
        c.rows(self).await
    }

    pub async fn fetch_optional(self, c: &mut (dyn Sql + '_)) -> Result<Option<Row>, StoreError> {
        Ok(c.rows(self).await?.into_iter().next())
    }

    pub async fn fetch_one(self, c: &mut (dyn Sql + '_)) -> Result<Row, StoreError> {
        let sql = self.sql.clone();
        c.rows(self)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt(format!("no row from `{sql}`")))
    }

    /// Rows affected.
    pub async fn execute(self, c: &mut (dyn Sql + '_)) -> Result<u64, StoreError> {
        c.run(self).await
    }
}

/// Somewhere statements run: a pool (each statement on its own) or a transaction.
pub trait Sql: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; rows affected.
    fn run<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Runs a query; its rows.
    fn rows<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<Vec<Row>, StoreError>>;
}

/// A transaction: statements run in it, and nothing is visible to others until `commit`.
/// Dropped without commit, it rolls back.
pub trait SqlTx: Sql {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// An engine the shared roles run on.
pub trait SqlEngine: Send + Sync + 'static {
    fn engine_name(&self) -> &'static str;
    fn dialect(&self) -> Dialect;
    /// Statements on the pool, each committed on its own.
    fn pooled(&self) -> Box<dyn Sql + '_>;
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTx>, StoreError>>;
}

/// `(?, ?, …)` with `n` placeholders.
pub fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(2 + 3 * n);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// Data one multi-row statement may carry, well under MySQL's `max_allowed_packet`.
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// Inserts `rows` (each with `columns` values) as multi-row `head VALUES (…), (…) tail`
/// statements, as many rows per statement as the dialect's bound-value limit and a byte
/// budget allow.
pub async fn insert_rows<'a>(
    c: &mut (dyn Sql + '_),
    head: &str,
    columns: usize,
    rows: Vec<Vec<Arg<'a>>>,
    tail: &str,
) -> Result<(), StoreError> {
    let per_row = placeholders(columns);
    let max_rows = (c.dialect().max_binds() / columns.max(1)).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut args = Vec::new();
        let mut sql = format!("{head} VALUES ");
        let (mut n, mut bytes) = (0usize, 0usize);
        while let Some(row) = rows.next_if(|r| {
            n == 0
                || (n < max_rows
                    && bytes + r.iter().map(Arg::size).sum::<usize>() <= MAX_STATEMENT_BYTES)
        }) {
            if n > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&per_row);
            bytes += row.iter().map(Arg::size).sum::<usize>();
            args.extend(row);
            n += 1;
        }
        sql.push_str(tail);
        q(sql).bind_all(args).transient().execute(c).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_speak_each_dialect() {
        assert_eq!(
            Dialect::Sqlite.upsert(&["K"], &["A", "B"]),
            " ON CONFLICT (K) DO UPDATE SET A = excluded.A, B = excluded.B"
        );
        assert_eq!(
            Dialect::MySql.upsert(&["K"], &["A", "B"]),
            " ON DUPLICATE KEY UPDATE A = VALUES(A), B = VALUES(B)"
        );
    }

    #[test]
    fn placeholders_are_counted() {
        assert_eq!(placeholders(3), "(?, ?, ?)");
        assert_eq!(placeholders(1), "(?)");
    }
}
