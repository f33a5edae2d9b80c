use fleet_runtime::db::{self, SchemaError};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn migrations_apply_and_the_schema_check_follows_them(pool: PgPool) {
    assert!(matches!(
        db::check_schema(&pool).await,
        Err(SchemaError::Empty)
    ));
    db::migrate(&pool, Default::default()).await.unwrap();
    db::check_schema(&pool).await.unwrap();
    // Applying again is a no-op.
    db::migrate(&pool, Default::default()).await.unwrap();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "discoveries",
            "repos",
            "score_checks",
            "score_events",
            "score_history",
            "score_raw",
            "scores",
            "webhook_deliveries",
            "webhook_subscriptions",
            "work_failures"
        ]
    );

    // A database migrated by a newer producer is refused by an older binary, and vice versa.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = db::check_schema(&pool).await.unwrap_err();
    assert!(
        matches!(err, SchemaError::Mismatch { found: 99999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn repo_identity_is_case_insensitive_and_checked(pool: PgPool) {
    let insert =
        "INSERT INTO repos (repo_key, host, owner, name) VALUES ($1, 'github.com', $2, $3)";
    sqlx::query(insert)
        .bind("github.com/ossf/scorecard")
        .bind("OSSF")
        .bind("Scorecard")
        .execute(&pool)
        .await
        .unwrap();
    let dup = sqlx::query(insert)
        .bind("github.com/ossf/scorecard")
        .bind("ossf")
        .bind("scorecard")
        .execute(&pool)
        .await;
    assert!(dup.is_err(), "the lower-cased key is unique");
    let wrong_key = sqlx::query(insert)
        .bind("github.com/x/y")
        .bind("ossf")
        .bind("other")
        .execute(&pool)
        .await;
    assert!(wrong_key.is_err(), "the key must match the name");
}

/// The producer's due scan over a million repositories walks the partial index.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn due_scan_over_a_million_repos_uses_the_index(pool: PgPool) {
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name, next_due_at, enabled)
         SELECT 'github.com/o' || i || '/n', 'github.com', 'o' || i, 'n',
                now() + (i % 20000) * interval '1 minute' - interval '1 day', i % 50 <> 0
         FROM generate_series(1, 1000000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE repos").execute(&pool).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM repos WHERE enabled AND next_due_at <= now()
         ORDER BY next_due_at LIMIT 1000 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("repos_due_idx"),
        "due scan does not use the index:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan"),
        "due scan reads the table:\n{plan}"
    );
}
