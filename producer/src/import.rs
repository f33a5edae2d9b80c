//! `producer import`: repositories from scorecard's own list format (`repo,metadata` CSV with
//! `#` comments) or one per line, normalised and validated, written in large batches.
//! A rejected line is reported with its number and reason and does not stop the import;
//! re-importing is idempotent and leaves existing rows (and their scores) alone, but for the
//! priority a line's `criticality_score` sets ([`priority_of`]): the claim takes the most
//! critical due repositories first; and a repository a GET discovered becomes the list's
//! (`adopt`: no longer `discovered`, priority at least 0, enabled again if the producer had
//! retired it). Empty or binary input and a wrong CSV header are errors before anything is
//! written ([`ImportError`]). Rows go in key order, [`BATCH_ROWS`] a statement, [`WRITERS`]
//! statements at once.

use fleet_proto::{RepoName, RepoNameError};
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};

/// Rows per INSERT: large enough that a million rows take ~100 round trips, small enough
/// that one statement's arrays stay a few megabytes.
pub const BATCH_ROWS: usize = 10_000;

/// Batches written at once, each a transaction of its own.
pub const WRITERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name} is not a text file: {why}")]
    Binary { source_name: String, why: String },
    #[error("{source_name} has no repositories (it is empty or only comments)")]
    Empty { source_name: String },
    #[error(
        "{source_name}: line {line}: CSV header {header:?} does not start with `repo`; \
         expected scorecard's `repo,metadata` format or one repository per line"
    )]
    Header {
        source_name: String,
        line: usize,
        header: String,
    },
    #[error("writing repositories: {0}")]
    Db(#[from] sqlx::Error),
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: usize,
    pub reason: RepoNameError,
}

/// The repositories of a file, in order, and the lines that were not repositories.
#[derive(Debug, Default)]
pub struct Parsed {
    pub repos: Vec<RepoName>,
    /// Each repository's priority, where its line gave a criticality score.
    pub priorities: Vec<Option<i32>>,
    pub rejected: Vec<Rejected>,
}

/// Priority tiers a criticality score (0–1) maps to: few, because the claim walks each tier
/// with due work, and a tenth of criticality is as fine as the score's meaning goes.
pub const TIERS: f64 = 10.0;

/// The priority a line's metadata gives: scorecard's list says `criticality_score:0.42`, the
/// tier 0–10 it rounds to; none for metadata that says something else.
pub fn priority_of(metadata: &str) -> Option<i32> {
    let rest = metadata.split("criticality_score:").nth(1)?;
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let score: f64 = number.parse().ok()?;
    Some((score.clamp(0.0, 1.0) * TIERS).round() as i32)
}

/// Parses a whole file. Pure: unit-tested without a database.
pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Parsed, ImportError> {
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        return Err(ImportError::Binary {
            source_name: source_name.to_owned(),
            why: format!("NUL byte at offset {pos}"),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ImportError::Binary {
        source_name: source_name.to_owned(),
        why: format!("invalid UTF-8 at offset {}", e.valid_up_to()),
    })?;
    let mut parsed = Parsed::default();
    let mut seen_first = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first_field = line.split(',').next().unwrap_or_default().trim();
        if !seen_first {
            seen_first = true;
            // A header names its columns; the first must be `repo`.
            if first_field.eq_ignore_ascii_case("repo") {
                continue;
            }
            if line.contains(',') && !first_field.contains('/') {
                return Err(ImportError::Header {
                    source_name: source_name.to_owned(),
                    line: line_no,
                    header: line.to_owned(),
                });
            }
        }
        match RepoName::parse(first_field.trim_matches('"')) {
            Ok(repo) => {
                parsed.repos.push(repo);
                let metadata = line.split_once(',').map_or("", |(_, m)| m);
                parsed.priorities.push(priority_of(metadata));
            }
            Err(reason) => parsed.rejected.push(Rejected {
                line: line_no,
                reason,
            }),
        }
    }
    if parsed.repos.is_empty() && parsed.rejected.is_empty() {
        return Err(ImportError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(parsed)
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub new: u64,
    pub existing: u64,
}

/// Inserts repositories not yet known; they are due at once. Each batch commits on its own, so
/// an interrupted import keeps what it wrote and a rerun finishes the rest.
pub async fn write(pool: &PgPool, repos: &[RepoName]) -> Result<Imported, ImportError> {
    write_rows(pool, repos.iter().map(|r| (r.key(), r, None)).collect()).await
}

/// [`write`] for a parsed file: its priorities too, for new and known repositories.
pub async fn write_parsed(pool: &PgPool, parsed: &Parsed) -> Result<Imported, ImportError> {
    let rows = parsed
        .repos
        .iter()
        .zip(&parsed.priorities)
        .map(|(r, p)| (r.key(), r, *p))
        .collect();
    write_rows(pool, rows).await
}

async fn write_rows(
    pool: &PgPool,
    mut rows: Vec<(String, &RepoName, Option<i32>)>,
) -> Result<Imported, ImportError> {
    // In key order, the unique index on repo_key grows at its right edge instead of taking
    // each row on a random leaf page (measured: a third of the import's time).
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let writes = rows.chunks(BATCH_ROWS).map(|chunk| async move {
        let named: Vec<(&str, &RepoName, Option<i32>)> =
            chunk.iter().map(|(k, r, p)| (k.as_str(), *r, *p)).collect();
        let mut tx = pool.begin().await?;
        let inserted = fleet_runtime::db::insert_repos(&mut tx, &named).await?;
        adopt(&mut tx, &named).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((chunk.len() as u64, inserted))
    });
    // Batches on WRITERS connections at once: one PostgreSQL backend works on one core.
    let mut writes = futures::stream::iter(writes).buffer_unordered(WRITERS);
    let mut done = Imported::default();
    while let Some(written) = writes.next().await {
        let (rows, inserted) = written?;
        done.new += inserted;
        done.existing += rows - inserted;
    }
    Ok(done)
}

/// The import's own step after [`fleet_runtime::db::insert_repos`] (which the sink shares, and
/// which must not adopt anything): a list naming a repository a GET discovered makes it the
/// list's. It is no longer discovered, so never retired; it takes at least a list's lowest
/// priority (0) unless its line gave one; and one the producer retired is enabled again, so it
/// is scheduled. One an operator disabled stays disabled.
async fn adopt(
    conn: &mut PgConnection,
    rows: &[(&str, &RepoName, Option<i32>)],
) -> Result<(), sqlx::Error> {
    let keys: Vec<&str> = rows.iter().map(|(k, _, _)| *k).collect();
    // Rows locked in id order, as the sink locks them, so the two cannot deadlock. Discovered
    // rows are few: almost always this finds none.
    sqlx::query(
        "WITH listed AS (
             SELECT id FROM repos WHERE repo_key = ANY($1) AND discovered
             ORDER BY id FOR UPDATE
         )
         UPDATE repos r SET discovered = false, priority = greatest(r.priority, 0),
             enabled = r.enabled OR r.retired_at IS NOT NULL, retired_at = NULL
         FROM listed WHERE r.id = listed.id",
    )
    .persistent(false)
    .bind(&keys)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scorecard_csv_with_comments_and_metadata() {
        let text = "# weekly list\nrepo,metadata\ngithub.com/ossf/scorecard,criticality:0.9\n\n\
                    https://github.com/OSSF/scorecard-action.git/,\"a, b\"\n# done\n";
        let p = parse("list.csv", text.as_bytes()).unwrap();
        let names: Vec<String> = p.repos.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "github.com/ossf/scorecard",
                "github.com/OSSF/scorecard-action"
            ]
        );
        assert!(p.rejected.is_empty());
    }

    #[test]
    fn a_criticality_score_is_a_priority_tier() {
        assert_eq!(priority_of("criticality_score:0.422350"), Some(4));
        assert_eq!(priority_of("criticality_score:0.96"), Some(10));
        assert_eq!(priority_of("criticality_score: 1.7"), Some(10));
        assert_eq!(priority_of("Google"), None);
        assert_eq!(priority_of("criticality_score:n/a"), None);
        let text = "repo,metadata\ngithub.com/a/b,criticality_score:0.71\ngithub.com/c/d,Google\n";
        let p = parse("list.csv", text.as_bytes()).unwrap();
        assert_eq!(p.priorities, [Some(7), None]);
    }

    #[test]
    fn one_per_line_with_bad_lines_reported_by_number() {
        let text = "github.com/a/b\nnot a repo\ngitlab.com/x/y\ngithub.com/-x/y\ngithub.com/c/d\n";
        let p = parse("list.txt", text.as_bytes()).unwrap();
        assert_eq!(p.repos.len(), 2);
        let lines: Vec<usize> = p.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(p.rejected[1].reason.to_string().contains("only github.com"));
    }

    #[test]
    fn empty_binary_and_wrong_header_are_clear_errors() {
        let empty = parse("e", b"# nothing\n\n").unwrap_err().to_string();
        assert!(empty.contains("has no repositories"), "{empty}");
        let binary = parse("b", b"github.com/a/b\n\x00\x01")
            .unwrap_err()
            .to_string();
        assert!(
            binary.contains("not a text file: NUL byte at offset 15"),
            "{binary}"
        );
        let latin1 = parse("l", b"github.com/a/b\n\xe9t\xe9\n")
            .unwrap_err()
            .to_string();
        assert!(latin1.contains("invalid UTF-8"), "{latin1}");
        let header = parse("h", b"name,stars\ngithub.com/a/b,1\n")
            .unwrap_err()
            .to_string();
        assert!(
            header.contains("line 1") && header.contains("does not start with `repo`"),
            "{header}"
        );
    }

    #[test]
    fn the_real_scorecard_list_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/repos/github-projects-2021.csv");
        let bytes = std::fs::read(&path).unwrap();
        let p = parse("projects.csv", &bytes).unwrap();
        assert!(p.repos.len() > 53_000, "{}", p.repos.len());
        assert!(
            p.rejected.len() < 100,
            "{:?}",
            &p.rejected[..p.rejected.len().min(5)]
        );
    }
}
