//! The plans Postgres picks for the queue statements once it has switched
//! them to generic plans (after five runs of a prepared statement): a
//! sequential scan there turns every claim into a read of the whole table.
//! Needs `HOOKRELAY_TEST_POSTGRES_URL`; says SKIPPED without it.

use sqlx::{Connection, Executor, PgConnection, Row};

use super::{CLAIM_SQL, INGEST_SQL, NEXT_DUE_SQL};

/// A fresh database with the migrations applied, a backlog of 4,000
/// waiting and 4,000 delivered deliveries and 8,000 dedupe keys,
/// statistics analysed.
async fn database_with_backlog() -> Option<PgConnection> {
    let mut conn = fresh_database().await?;
    conn.execute(
        "INSERT INTO messages SELECT 'm' || g, 'portal', g, 'application/json', '{}', 'x', '[]' \
         FROM generate_series(1, 8000) g; \
         INSERT INTO deliveries (id, message_id, sink, status, attempts, next_attempt_at, events, \
           cycle_started_at, created_at, updated_at) \
         SELECT 'd' || g, 'm' || g, 'out', CASE WHEN g <= 4000 THEN 'delivered' ELSE 'pending' END, \
           0, g, '[0]', g, g, g FROM generate_series(1, 8000) g; \
         INSERT INTO dedupe SELECT 'portal', 'k' || g, 'm' || g, g FROM generate_series(1, 8000) g; \
         ANALYZE",
    )
    .await
    .unwrap();
    Some(conn)
}

/// A fresh database with the migrations applied and nothing else: never
/// analysed, as when a relay starts on a new database and its statements
/// are planned (and, after five runs, cached) against empty tables.
async fn fresh_database() -> Option<PgConnection> {
    let Ok(base) = std::env::var("HOOKRELAY_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: HOOKRELAY_TEST_POSTGRES_URL is not set");
        return None;
    };
    let mut admin = PgConnection::connect(&base).await.unwrap();
    let name = format!("hookrelay_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let mut url = reqwest::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    let mut conn = PgConnection::connect(url.as_str()).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run(&mut conn)
        .await
        .unwrap();
    conn.execute("SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    Some(conn)
}

/// The generic plan of `sql` run with `args` (SQL literals), as text.
async fn generic_plan(conn: &mut PgConnection, name: &str, sql: &str, args: &str) -> String {
    conn.execute(format!("PREPARE {name} AS {sql}").as_str())
        .await
        .unwrap();
    let rows = sqlx::query(&format!("EXPLAIN EXECUTE {name}({args})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fails unless the generic plan of `sql` scans no table sequentially and
/// uses the index `index`.
async fn assert_plan_uses(name: &str, sql: &str, args: &str, index: &str) {
    let Some(mut conn) = database_with_backlog().await else {
        return;
    };
    assert_generic_plan(&mut conn, name, sql, args, index).await;
}

async fn assert_generic_plan(
    conn: &mut PgConnection,
    name: &str,
    sql: &str,
    args: &str,
    index: &str,
) {
    let plan = generic_plan(conn, name, sql, args).await;
    assert!(
        !plan.contains("Seq Scan"),
        "{name} plan scans a table: {plan}"
    );
    assert!(plan.contains(index), "{name} plan: {plan}");
}

#[tokio::test]
async fn claims_read_the_queue_index_not_the_table() {
    let args = "'t', 10, 9000, 'out', 64";
    assert_plan_uses("claim", CLAIM_SQL, args, "deliveries_queue").await;
}

#[tokio::test]
async fn next_due_reads_the_queue_index_not_the_table() {
    let args = "ARRAY['out', 'other']";
    assert_plan_uses("next_due", NEXT_DUE_SQL, args, "deliveries_queue").await;
}

#[tokio::test]
async fn ingest_reads_dedupe_holders_by_key_not_the_table() {
    // Candidate keys that exist ('k1') and do not ('new'); the arrays have
    // the statement's parameter types.
    let args = "ARRAY['portal', 'portal'], ARRAY['k1', 'new'], ARRAY['n1', 'n2'], 9000, \
                ARRAY[1, 1]::bigint[], ARRAY['n1', 'n2'], ARRAY['portal', 'portal'], \
                ARRAY[9000, 9000]::bigint[], ARRAY['a', 'a'], ARRAY['{}', '{}'], \
                ARRAY['\\x00', '\\x00']::bytea[], ARRAY['[]', '[]'], ARRAY[true, true], \
                ARRAY['e1'], ARRAY['n2'], ARRAY['out'], ARRAY[9000]::bigint[], ARRAY['[0]'], \
                ARRAY[9000]::bigint[], ARRAY[false, false]";
    // Planned on empty, never-analysed tables, where a join to `dedupe`
    // was planned as a hash of a sequential scan (kept while the table
    // grew: ingest at 16 senders fell from ~6,700 to 1,950/s).
    let Some(mut conn) = fresh_database().await else {
        return;
    };
    assert_generic_plan(&mut conn, "ingest", INGEST_SQL, args, "dedupe_pkey").await;
}

#[tokio::test]
async fn claims_read_messages_by_key_even_when_planned_on_empty_tables() {
    let Some(mut conn) = fresh_database().await else {
        return;
    };
    let plan = generic_plan(&mut conn, "claim", CLAIM_SQL, "'t', 10, 9000, 'out', 64").await;
    assert!(plan.contains("messages_pkey"), "claim plan: {plan}");
    assert!(!plan.contains("Seq Scan on messages"), "claim plan: {plan}");
}
