//! The plans Postgres picks for the queue statements once it has switched
//! them to generic plans (after five runs of a prepared statement): a
//! sequential scan there turns every claim into a read of the whole table.
//! Needs `HOOKRELAY_TEST_POSTGRES_URL`; says SKIPPED without it.

use sqlx::{Connection, Executor, PgConnection, Row};

use super::{CLAIM_SQL, NEXT_DUE_SQL};

/// A fresh database with the migrations applied and a backlog of 4,000
/// waiting and 4,000 delivered deliveries, statistics analysed.
async fn database_with_backlog() -> Option<PgConnection> {
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
    conn.execute(
        "INSERT INTO messages SELECT 'm' || g, 'portal', g, 'application/json', '{}', 'x', '[]' \
         FROM generate_series(1, 8000) g; \
         INSERT INTO deliveries (id, message_id, sink, status, attempts, next_attempt_at, events, \
           cycle_started_at, created_at, updated_at) \
         SELECT 'd' || g, 'm' || g, 'out', CASE WHEN g <= 4000 THEN 'delivered' ELSE 'pending' END, \
           0, g, '[0]', g, g, g FROM generate_series(1, 8000) g; \
         ANALYZE; \
         SET plan_cache_mode = force_generic_plan",
    )
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

/// Fails unless the generic plan of `sql` reads `deliveries_queue` and
/// scans no table sequentially.
async fn assert_reads_queue_index(name: &str, sql: &str, args: &str) {
    let Some(mut conn) = database_with_backlog().await else {
        return;
    };
    let plan = generic_plan(&mut conn, name, sql, args).await;
    assert!(
        !plan.contains("Seq Scan"),
        "{name} plan scans a table: {plan}"
    );
    assert!(plan.contains("deliveries_queue"), "{name} plan: {plan}");
}

#[tokio::test]
async fn claims_read_the_queue_index_not_the_table() {
    assert_reads_queue_index("claim", CLAIM_SQL, "'t', 10, 9000, 'out', 64").await;
}

#[tokio::test]
async fn next_due_reads_the_queue_index_not_the_table() {
    assert_reads_queue_index("next_due", NEXT_DUE_SQL, "ARRAY['out', 'other']").await;
}
