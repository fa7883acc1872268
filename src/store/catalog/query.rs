//! A statement with its parameters, built without knowing the backend, and
//! the one place parameters are bound to a backend's query (generic over
//! the database, so neither backend repeats it).

use sqlx::database::Database;
use sqlx::{Encode, Type};

use crate::domain::time::Millis;

/// A parameter value.
#[derive(Debug, Clone)]
pub enum Param {
    /// An integer (times, counts, limits).
    Int(i64),
    /// Text.
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
    /// A flag (stored as 0/1 on SQLite, a boolean on Postgres).
    Bool(bool),
}

impl Param {
    /// A text parameter.
    pub fn text(s: impl Into<String>) -> Param {
        Param::Text(s.into())
    }

    /// A time parameter (an `i64` column of milliseconds).
    pub fn time(t: Millis) -> Param {
        Param::Int(t.get())
    }
}

/// SQL with numbered parameters (`$1`, `$2`, ...), which both SQLite and
/// Postgres read.
#[derive(Debug, Clone)]
pub struct Query {
    /// The statement.
    pub sql: String,
    /// Its parameters, `$1` first.
    pub params: Vec<Param>,
}

impl Query {
    /// A statement without parameters yet.
    pub fn new(sql: impl Into<String>) -> Query {
        Query {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// A statement whose text already names `$1..$n` for `params`.
    pub fn with(sql: impl Into<String>, params: impl IntoIterator<Item = Param>) -> Query {
        Query {
            sql: sql.into(),
            params: params.into_iter().collect(),
        }
    }

    /// Appends text.
    pub fn push(&mut self, sql: &str) -> &mut Query {
        self.sql.push_str(sql);
        self
    }

    /// Appends the next parameter's placeholder and the parameter.
    pub fn bind(&mut self, p: Param) -> &mut Query {
        self.params.push(p);
        self.sql.push_str(&format!("${}", self.params.len()));
        self
    }

    /// Appends ` AND <condition> $n`.
    pub fn and(&mut self, condition: &str, p: Param) -> &mut Query {
        self.push(" AND ").push(condition).push(" ").bind(p)
    }

    /// Appends a comma-separated list of parameters.
    pub fn list(&mut self, ps: impl IntoIterator<Item = Param>) -> &mut Query {
        for (i, p) in ps.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(p);
        }
        self
    }
}

/// `q`'s parameters as arguments of database `DB`, for `sqlx::query_with`
/// and `sqlx::query_as_with`.
pub fn arguments<'q, DB>(q: &'q Query) -> Result<<DB as Database>::Arguments<'q>, sqlx::Error>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    use sqlx::Arguments;
    let mut args = <DB as Database>::Arguments::<'q>::default();
    for p in &q.params {
        match p {
            Param::Int(v) => args.add(*v),
            Param::Text(s) => args.add(s.as_str()),
            Param::OptText(s) => args.add(s.as_deref()),
            Param::Bool(b) => args.add(*b),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// Runs `q` on `executor` and decodes its rows as `T`: the whole of a
/// backend's [`super::Fetch`], written once.
pub async fn fetch_with<'q, 'e, DB, E, T>(executor: E, q: &'q Query) -> Result<Vec<T>, sqlx::Error>
where
    DB: Database,
    E: sqlx::Executor<'e, Database = DB>,
    T: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin,
    i64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    'q: 'e,
{
    let args = arguments::<DB>(q)?;
    sqlx::query_as_with(&q.sql, args).fetch_all(executor).await
}

/// Runs `q` on `executor`; rows affected: the whole of a backend's
/// [`super::Write::write`], written once.
pub async fn write_with<'q, 'e, DB, E>(executor: E, q: &'q Query) -> Result<u64, sqlx::Error>
where
    DB: Database,
    E: sqlx::Executor<'e, Database = DB>,
    i64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    <DB as Database>::QueryResult: RowsAffected,
    'q: 'e,
{
    let args = arguments::<DB>(q)?;
    Ok(sqlx::query_with(&q.sql, args)
        .execute(executor)
        .await?
        .affected())
}

/// The rows-affected count of either backend's query result.
pub trait RowsAffected {
    /// How many rows the statement changed.
    fn affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}
