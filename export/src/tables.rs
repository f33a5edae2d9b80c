//! The two Parquet tables, `latest` and `history`: their schemas and their rows, streamed from
//! PostgreSQL in batches and written a row group at a time.
//!
//! Each check scorecard documents is a column of its own (snake_case: `maintained`,
//! `binary_artifacts`), so "repositories where Maintained < 3" is `WHERE maintained < 3` and
//! "the mean of each check" is one `avg()` per column in any engine. `latest` also carries every
//! check as a list of `{name, score, reason}`, which keeps the reasons and any check scorecard
//! adds after this schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    Decimal128Builder, Int8Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::TryStreamExt as _;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::dest::{Destination, Written};
use crate::stats::Tally;

/// The checks scorecard documents, each a column of both tables.
pub use fleet_proto::scorecard::CHECKS;

/// A check's column name: `Binary-Artifacts` is `binary_artifacts`.
pub fn column(check: &str) -> String {
    check.to_ascii_lowercase().replace('-', "_")
}

/// The aggregate score as scorecard prints it and PostgreSQL keeps it: one decimal. Not a
/// double: this parquet writes doubles with the IEEE 754 total-order column order, which readers
/// still in wide use (polars 1.x) refuse to open.
fn score_type() -> DataType {
    DataType::Decimal128(3, 1)
}

fn score_builder() -> Decimal128Builder {
    Decimal128Builder::new()
        .with_precision_and_scale(3, 1)
        .expect("a valid decimal")
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn check_entry() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("score", DataType::Int8, true),
        Field::new("reason", DataType::Utf8, false),
    ])
}

fn check_columns() -> impl Iterator<Item = Field> {
    CHECKS
        .iter()
        .map(|check| Field::new(column(check), DataType::Int8, true))
}

pub fn latest_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("repo", DataType::Utf8, false),
        Field::new("owner", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("commit", DataType::Utf8, false),
        Field::new("scanned_at", utc_micros(), false),
        Field::new("scorecard_version", DataType::Utf8, false),
        Field::new("scorecard_commit", DataType::Utf8, false),
        Field::new("score", score_type(), true),
        Field::new("work_id", DataType::Utf8, false),
    ];
    fields.extend(check_columns());
    fields.push(Field::new(
        "checks",
        DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(check_entry()),
            true,
        ))),
        false,
    ));
    Arc::new(Schema::new(fields))
}

pub fn history_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("repo", DataType::Utf8, false),
        Field::new("commit", DataType::Utf8, false),
        Field::new("scanned_at", utc_micros(), false),
        Field::new("scorecard_version", DataType::Utf8, false),
        Field::new("score", score_type(), true),
        Field::new("work_id", DataType::Utf8, false),
    ];
    fields.extend(check_columns());
    Arc::new(Schema::new(fields))
}

fn properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows))
        .build()
}

fn tenths(score: Option<i32>) -> Option<f64> {
    score.map(|t| f64::from(t) / 10.0)
}

/// What one table file came to.
#[derive(Debug)]
pub struct TableFile {
    pub rows: u64,
    pub written: Written,
}

pub struct Sizes {
    pub batch_rows: usize,
    pub row_group_rows: usize,
}

/// One row of `latest`, as read.
#[derive(sqlx::FromRow)]
struct LatestRow {
    repo: String,
    owner: String,
    name: String,
    commit_sha: String,
    scored_at: DateTime<Utc>,
    scorecard_version: String,
    scorecard_commit: String,
    score_tenths: Option<i32>,
    work_id: String,
    check_names: Option<Vec<String>>,
    check_scores: Option<Vec<Option<i16>>>,
    check_reasons: Option<Vec<String>>,
}

/// Every repository's latest result, in repository order, with its checks from
/// `score_checks` (not the result's JSON, whose details are ~10 KB a row). The checks are
/// grouped in one pass over `score_checks` and joined, never looked up per repository: in
/// repository-name order that would be a random read each, and at 10,000,000 repositories the
/// table is larger than memory. PostgreSQL sorts the joined rows in bounded memory, spilling
/// to disk. `array_agg` keeps the three arrays in the same order; [`LatestBuilder::push`]
/// orders them by name.
pub const LATEST: &str = "
    SELECT r.host || '/' || r.owner || '/' || r.name AS repo, r.owner, r.name, s.commit_sha,
           s.scored_at, s.scorecard_version, s.scorecard_commit, (s.score * 10)::int4 AS score_tenths,
           s.work_id, c.check_names, c.check_scores, c.check_reasons
    FROM scores s
    JOIN repos r ON r.id = s.repo_id
    LEFT JOIN (
        SELECT repo_id, array_agg(name) AS check_names, array_agg(score) AS check_scores,
               array_agg(reason) AS check_reasons
        FROM score_checks GROUP BY repo_id
    ) c ON c.repo_id = s.repo_id
    ORDER BY r.repo_key";

struct LatestBuilder {
    repo: StringBuilder,
    owner: StringBuilder,
    name: StringBuilder,
    commit: StringBuilder,
    scanned_at: TimestampMicrosecondBuilder,
    version: StringBuilder,
    scorecard_commit: StringBuilder,
    score: Decimal128Builder,
    work_id: StringBuilder,
    checks: Vec<Int8Builder>,
    list: ListBuilder<StructBuilder>,
}

impl LatestBuilder {
    fn new() -> Self {
        let entry = check_entry();
        let item = Arc::new(Field::new("item", DataType::Struct(entry.clone()), true));
        Self {
            repo: StringBuilder::new(),
            owner: StringBuilder::new(),
            name: StringBuilder::new(),
            commit: StringBuilder::new(),
            scanned_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            version: StringBuilder::new(),
            scorecard_commit: StringBuilder::new(),
            score: score_builder(),
            work_id: StringBuilder::new(),
            checks: CHECKS.iter().map(|_| Int8Builder::new()).collect(),
            list: ListBuilder::new(StructBuilder::from_fields(entry, 0)).with_field(item),
        }
    }

    fn push(&mut self, row: &LatestRow, tally: &mut Tally) {
        self.repo.append_value(&row.repo);
        self.owner.append_value(&row.owner);
        self.name.append_value(&row.name);
        self.commit.append_value(&row.commit_sha);
        self.scanned_at
            .append_value(row.scored_at.timestamp_micros());
        self.version.append_value(&row.scorecard_version);
        self.scorecard_commit.append_value(&row.scorecard_commit);
        self.score.append_option(row.score_tenths.map(i128::from));
        self.work_id.append_value(&row.work_id);
        let names = row.check_names.as_deref().unwrap_or_default();
        let scores = row.check_scores.as_deref().unwrap_or_default();
        let reasons = row.check_reasons.as_deref().unwrap_or_default();
        let mut checks: Vec<_> = names.iter().zip(scores).zip(reasons).collect();
        checks.sort_unstable_by_key(|((name, _), _)| *name);
        let mut by_name: BTreeMap<&str, Option<i8>> = BTreeMap::new();
        let entries = self.list.values();
        for ((name, score), reason) in checks {
            let score = score.and_then(|s| i8::try_from(s).ok());
            by_name.insert(name, score);
            entries
                .field_builder::<StringBuilder>(0)
                .expect("name")
                .append_value(name);
            entries
                .field_builder::<Int8Builder>(1)
                .expect("score")
                .append_option(score);
            entries
                .field_builder::<StringBuilder>(2)
                .expect("reason")
                .append_value(reason);
            entries.append(true);
        }
        self.list.append(true);
        for (builder, check) in self.checks.iter_mut().zip(CHECKS) {
            builder.append_option(by_name.get(*check).copied().flatten());
        }
        tally.add(tenths(row.score_tenths), &by_name);
    }

    fn finish(&mut self, schema: &SchemaRef) -> anyhow::Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.repo.finish()),
            Arc::new(self.owner.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.commit.finish()),
            Arc::new(self.scanned_at.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.scorecard_commit.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.work_id.finish()),
        ];
        columns.extend(
            self.checks
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.list.finish()));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Writes `latest.parquet` of the snapshot at `dir`, tallying the figures as rows pass.
pub async fn write_latest(
    conn: &mut PgConnection,
    dest: &Destination,
    relative: &str,
    sizes: &Sizes,
    tally: &mut Tally,
) -> anyhow::Result<TableFile> {
    let schema = latest_schema();
    let mut writer = AsyncArrowWriter::try_new(
        dest.writer(relative),
        schema.clone(),
        Some(properties(sizes.row_group_rows)),
    )?;
    let mut builder = LatestBuilder::new();
    let mut pending = 0;
    let mut rows = 0u64;
    // Unnamed statements: a transaction pooler (PgBouncer) must not keep them.
    let mut stream = sqlx::query_as::<_, LatestRow>(LATEST)
        .persistent(false)
        .fetch(&mut *conn);
    while let Some(row) = stream.try_next().await? {
        builder.push(&row, tally);
        pending += 1;
        if pending == sizes.batch_rows {
            writer.write(&builder.finish(&schema)?).await?;
            rows += pending as u64;
            pending = 0;
        }
    }
    drop(stream);
    if pending > 0 {
        writer.write(&builder.finish(&schema)?).await?;
        rows += pending as u64;
    }
    writer.finish().await?;
    Ok(TableFile {
        rows,
        written: writer.into_inner().written(),
    })
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    repo: String,
    commit_sha: String,
    scored_at: DateTime<Utc>,
    scorecard_version: String,
    score_tenths: Option<i32>,
    work_id: String,
    check_scores: Json<BTreeMap<String, Option<i16>>>,
}

/// One scan date's results (UTC), in scan order; `score_history_scored_brin` finds the day.
const HISTORY_DAY: &str = "
    SELECT r.host || '/' || r.owner || '/' || r.name AS repo, h.commit_sha, h.scored_at,
           h.scorecard_version, (h.score * 10)::int4 AS score_tenths, h.work_id, h.check_scores
    FROM score_history h
    JOIN repos r ON r.id = h.repo_id
    WHERE h.scored_at >= $1 AND h.scored_at < $2
    ORDER BY h.scored_at, h.work_id";

/// The scan dates (UTC) of results recorded after `since`: the history partitions an export
/// must write again.
pub async fn touched_dates(
    conn: &mut PgConnection,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<NaiveDate>> {
    let dates = sqlx::query_scalar(
        "SELECT DISTINCT (scored_at AT TIME ZONE 'UTC')::date FROM score_history
         WHERE recorded_at > coalesce($1, '-infinity'::timestamptz) ORDER BY 1",
    )
    .bind(since)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok(dates)
}

/// Writes one scan date's partition file, tallying that day's figures.
pub async fn write_history_day(
    conn: &mut PgConnection,
    dest: &Destination,
    relative: &str,
    date: NaiveDate,
    sizes: &Sizes,
    tally: &mut Tally,
) -> anyhow::Result<TableFile> {
    let schema = history_schema();
    let mut writer = AsyncArrowWriter::try_new(
        dest.writer(relative),
        schema.clone(),
        Some(properties(sizes.row_group_rows)),
    )?;
    let start = date.and_time(chrono::NaiveTime::MIN).and_utc();
    let mut rows = 0u64;
    let mut batch: Vec<HistoryRow> = Vec::with_capacity(sizes.batch_rows);
    let mut stream = sqlx::query_as::<_, HistoryRow>(HISTORY_DAY)
        .bind(start)
        .bind(start + TimeDelta::days(1))
        .persistent(false)
        .fetch(&mut *conn);
    while let Some(row) = stream.try_next().await? {
        batch.push(row);
        if batch.len() == sizes.batch_rows {
            writer
                .write(&history_batch(&schema, &batch, tally)?)
                .await?;
            rows += batch.len() as u64;
            batch.clear();
        }
    }
    drop(stream);
    if !batch.is_empty() {
        writer
            .write(&history_batch(&schema, &batch, tally)?)
            .await?;
        rows += batch.len() as u64;
    }
    writer.finish().await?;
    Ok(TableFile {
        rows,
        written: writer.into_inner().written(),
    })
}

fn history_batch(
    schema: &SchemaRef,
    rows: &[HistoryRow],
    tally: &mut Tally,
) -> anyhow::Result<RecordBatch> {
    let mut repo = StringBuilder::new();
    let mut commit = StringBuilder::new();
    let mut scanned_at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut version = StringBuilder::new();
    let mut score = score_builder();
    let mut work_id = StringBuilder::new();
    let mut checks: Vec<Int8Builder> = CHECKS.iter().map(|_| Int8Builder::new()).collect();
    for row in rows {
        repo.append_value(&row.repo);
        commit.append_value(&row.commit_sha);
        scanned_at.append_value(row.scored_at.timestamp_micros());
        version.append_value(&row.scorecard_version);
        score.append_option(row.score_tenths.map(i128::from));
        work_id.append_value(&row.work_id);
        let by_name: BTreeMap<&str, Option<i8>> = row
            .check_scores
            .iter()
            .map(|(name, s)| (name.as_str(), s.and_then(|s| i8::try_from(s).ok())))
            .collect();
        for (builder, check) in checks.iter_mut().zip(CHECKS) {
            builder.append_option(by_name.get(*check).copied().flatten());
        }
        tally.add(tenths(row.score_tenths), &by_name);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(repo.finish()),
        Arc::new(commit.finish()),
        Arc::new(scanned_at.finish()),
        Arc::new(version.finish()),
        Arc::new(score.finish()),
        Arc::new(work_id.finish()),
    ];
    columns.extend(checks.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
