//! `/data/`: the export's files over HTTP, so a reader such as polars, DuckDB or Spark queries
//! `/data/latest.parquet` with range requests instead of downloading all of it.
//!
//! The export (the `export` binary) publishes a snapshot by replacing `manifest.json` at the
//! root of its directory; this serves the published snapshot's files at stable paths, each with
//! its SHA-256 from the manifest as a strong `ETag`. Ranges, `HEAD` and `If-Modified-Since` are
//! tower-http's `ServeFile`; `If-None-Match` is answered here, from the manifest, before the
//! file is opened.
//!
//! A stable path's file changes at each publish, so a reader's later ranges must come from the
//! file its first one did: an `If-Match` with an older `ETag` is a 412, and an `If-Range` that
//! is not the current `ETag` gets the whole file. The index also gives each file's
//! `snapshot_url` (`/data/snapshots/<id>/…`): the same bytes for as long as the snapshot is
//! kept, served `immutable`, for readers that send neither header.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::model::ApiError;
use crate::routes::{App, Failure};

/// The manifest's fields this serves (export/src/manifest.rs writes it; fields it adds later
/// are ignored here).
#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    schema_version: u32,
    snapshot: String,
    exported_at: DateTime<Utc>,
    data_as_of: DateTime<Utc>,
    files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    path: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    date: Option<NaiveDate>,
    rows: u64,
    bytes: u64,
    sha256: String,
}

/// The index `/data/` answers.
#[derive(Debug, Serialize)]
struct Index {
    schema_version: u32,
    exported_at: DateTime<Utc>,
    data_as_of: DateTime<Utc>,
    manifest: &'static str,
    files: Vec<IndexEntry>,
}

#[derive(Debug, Serialize)]
struct IndexEntry {
    url: String,
    /// The same file under its snapshot's path, which never changes while it is kept.
    snapshot_url: String,
    #[serde(flatten)]
    file: FileEntry,
}

struct Published {
    /// The manifest file's mtime, length and inode: a publish replaces the file (a new inode),
    /// whatever the clock's resolution.
    identity: (SystemTime, u64, u64),
    manifest: Manifest,
    by_path: HashMap<String, usize>,
}

/// The export's directory, its published manifest read again whenever the file changes.
pub struct DataDir {
    dir: PathBuf,
    published: Mutex<Option<Arc<Published>>>,
    stats: Mutex<Option<Arc<Stats>>>,
}

impl DataDir {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            published: Mutex::new(None),
            stats: Mutex::new(None),
        }
    }

    fn published(&self) -> Result<Arc<Published>, Failure> {
        let path = self.dir.join("manifest.json");
        let identity = std::fs::metadata(&path)
            .and_then(|m| {
                use std::os::unix::fs::MetadataExt as _;
                Ok((m.modified()?, m.len(), m.ino()))
            })
            .map_err(|_| not_yet())?;
        let mut cached = self.published.lock().expect("data manifest lock");
        if let Some(p) = cached.as_ref().filter(|p| p.identity == identity) {
            return Ok(p.clone());
        }
        let manifest: Manifest = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                tracing::warn!(path = %path.display(), "the export's manifest does not read");
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the export's manifest cannot be read; try again shortly",
                )
            })?;
        let by_path = manifest
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.clone(), i))
            .collect();
        let published = Arc::new(Published {
            identity,
            manifest,
            by_path,
        });
        *cached = Some(published.clone());
        Ok(published)
    }

    fn file(&self, published: &Published, relative: &str) -> PathBuf {
        let mut path = self.dir.join(FsPath::new(&published.manifest.snapshot));
        path.extend(relative.split('/'));
        path
    }

    /// Where `relative` is: a file of the published snapshot at its stable path, or
    /// `snapshots/<id>/<file>` of a snapshot still kept, whose files never change.
    fn resolve(&self, relative: &str) -> Result<Target, Failure> {
        let missing = |what: String| Failure::new(StatusCode::NOT_FOUND, what);
        if let Some(rest) = relative.strip_prefix("snapshots/") {
            let (id, file) = rest.split_once('/').unwrap_or((rest, ""));
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(missing(format!("no snapshot {id}")));
            }
            let snapshot = self.dir.join("snapshots").join(id);
            let manifest: Manifest = std::fs::read(snapshot.join("manifest.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| {
                    missing(format!(
                        "no snapshot {id} (the published one and the one before it are kept; \
                         GET /data/ names them)"
                    ))
                })?;
            let etag = if file == "manifest.json" {
                format!("\"{}\"", manifest.snapshot.replace('/', "-"))
            } else {
                let entry = manifest
                    .files
                    .iter()
                    .find(|f| f.path == file)
                    .ok_or_else(|| missing(format!("snapshot {id} has no file {file}")))?;
                format!("\"{}\"", entry.sha256)
            };
            let mut path = snapshot;
            path.extend(file.split('/'));
            return Ok(Target {
                path,
                etag,
                immutable: true,
            });
        }
        let published = self.published()?;
        let etag = if relative == "manifest.json" {
            // The manifest lists every file's hash; its own is the snapshot's name.
            format!("\"{}\"", published.manifest.snapshot.replace('/', "-"))
        } else {
            let entry = published
                .by_path
                .get(relative)
                .map(|i| &published.manifest.files[*i])
                .ok_or_else(|| {
                    missing(format!(
                        "the published export has no file {relative} (GET /data/ lists them)"
                    ))
                })?;
            format!("\"{}\"", entry.sha256)
        };
        Ok(Target {
            path: self.file(&published, relative),
            etag,
            immutable: false,
        })
    }
}

/// A file to serve and its strong ETag.
struct Target {
    path: PathBuf,
    etag: String,
    /// Under its snapshot's path: the same bytes for as long as it exists.
    immutable: bool,
}

/// The export's three kinds of file, by name (NDJSON has no registered type of its own).
fn content_type(relative: &str) -> &'static str {
    match relative.rsplit_once('.').map(|(_, ext)| ext) {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("ndjson") => "application/x-ndjson",
        _ => "application/json",
    }
}

fn not_yet() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "no export has been published here yet (the export CronJob writes one a day)",
    )
}

fn data_dir(app: &App) -> Result<&DataDir, Failure> {
    app.data.as_ref().ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "this api serves no export (EXPORT_DIR is not set)",
        )
    })
}

/// `GET /data/`: every file of the published export, with its URL, rows, bytes and SHA-256.
#[utoipa::path(
    get,
    path = "/data/",
    responses(
        (status = 200, description = "The published export's files: url, path, kind, date, rows, bytes, sha256",
            content_type = "application/json", body = Object),
        (status = 404, description = "No export is served here, or none is published yet", body = ApiError),
        (status = 503, description = "The export's manifest cannot be read", body = ApiError),
    )
)]
pub async fn index(State(app): State<Arc<App>>) -> Result<Response, Failure> {
    let published = data_dir(&app)?.published()?;
    let m = &published.manifest;
    let index = Index {
        schema_version: m.schema_version,
        exported_at: m.exported_at,
        data_as_of: m.data_as_of,
        manifest: "/data/manifest.json",
        files: m
            .files
            .iter()
            .map(|f| IndexEntry {
                url: format!("/data/{}", f.path),
                snapshot_url: format!("/data/{}/{}", m.snapshot, f.path),
                file: f.clone(),
            })
            .collect(),
    };
    let mut response = axum::Json(index).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={}", app.cache_seconds)).expect("ascii"),
    );
    Ok(response)
}

/// `GET /data/{path}`: one file of the published export, ranges and all.
#[utoipa::path(
    get,
    path = "/data/{path}",
    params(("path" = String, Path, example = "latest.parquet", description = "A file the index lists")),
    responses(
        (status = 200, description = "The file, its SHA-256 as ETag",
            content((String = "application/vnd.apache.parquet"), (String = "application/x-ndjson"), (String = "application/json"))),
        (status = 206, description = "The requested range (Range)",
            content((String = "application/vnd.apache.parquet"), (String = "application/x-ndjson"), (String = "application/json"))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such file in the published export", body = ApiError),
        (status = 412, description = "If-Match names another version: a new export was published", body = ApiError),
        (status = 416, description = "The range is outside the file"),
        (status = 503, description = "The export's manifest cannot be read", body = ApiError),
    )
)]
pub async fn file(
    State(app): State<Arc<App>>,
    Path(relative): Path<String>,
    request: Request,
) -> Result<Response, Failure> {
    let dir = data_dir(&app)?;
    let Target {
        path,
        etag,
        immutable,
    } = dir.resolve(&relative)?;
    let mut request = request;
    let headers = request.headers_mut();
    let names = |name: header::HeaderName| {
        headers.get(&name).and_then(|v| v.to_str().ok()).map(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        })
    };
    // The file behind a stable path changes with each publish: a reader's later ranges must come
    // from the file its first one did, or it learns that it changed (RFC 9110 13.1).
    if names(header::IF_MATCH) == Some(false) {
        app.metrics.data_request("precondition_failed");
        return Err(Failure::new(
            StatusCode::PRECONDITION_FAILED,
            "the file changed: a new export was published since (GET /data/ lists it)",
        ));
    }
    let fresh = names(header::IF_NONE_MATCH) == Some(true);
    // If-Range is honoured only as the exact strong ETag: any other answers the whole file.
    if headers
        .get(header::IF_RANGE)
        .is_some_and(|v| v.to_str().ok() != Some(etag.as_str()))
    {
        headers.remove(header::RANGE);
    }
    headers.remove(header::IF_RANGE);
    // With If-None-Match present, If-Modified-Since is ignored (RFC 9110 13.1.3).
    if headers.contains_key(header::IF_NONE_MATCH) {
        headers.remove(header::IF_MODIFIED_SINCE);
    }
    let ranged = headers.contains_key(header::RANGE);
    app.metrics.data_request(if fresh {
        "not_modified"
    } else if ranged {
        "range"
    } else {
        "whole"
    });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match ServeFile::new(path).oneshot(request).await {
            Ok(served) => served.map(Body::new),
            Err(e) => match e {},
        }
    };
    let carries_file = matches!(
        response.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT
    );
    let headers = response.headers_mut();
    if carries_file {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&relative)),
        );
    }
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    let cache = if immutable {
        "public, max-age=31536000, immutable".to_owned()
    } else {
        format!("public, max-age={}", app.cache_seconds)
    };
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).expect("ascii"),
    );
    Ok(response)
}

/// `stats.json` of the published export, as the `/stats` page reads it (the export's
/// `stats::Figures`; fields it adds later are ignored here).
#[derive(Debug, Clone, Deserialize)]
pub struct Figures {
    pub computed_at: DateTime<Utc>,
    pub pass_at: u8,
    pub coverage: Coverage,
    pub latest: Summary,
    pub weeks: Vec<Week>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Coverage {
    pub repositories: i64,
    pub scored: i64,
    pub failing: i64,
    pub never_scored: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    pub results: u64,
    pub mean_score: Option<f64>,
    pub score_histogram: Vec<Bin>,
    pub checks: std::collections::BTreeMap<String, CheckSummary>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bin {
    pub from: u8,
    pub to: u8,
    pub results: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckSummary {
    pub scored: u64,
    pub mean: Option<f64>,
    pub pass_rate: Option<f64>,
    pub scores: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Week {
    pub week_start: NaiveDate,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The figures of one published snapshot, parsed once.
pub struct Stats {
    pub snapshot: String,
    pub json: Vec<u8>,
    pub figures: Figures,
}

impl DataDir {
    /// The published snapshot's figures: read when a new snapshot is published, never by a
    /// query over the score tables.
    fn stats(&self) -> Result<Arc<Stats>, Failure> {
        let published = self.published()?;
        let mut cached = self.stats.lock().expect("stats lock");
        if let Some(s) = cached
            .as_ref()
            .filter(|s| s.snapshot == published.manifest.snapshot)
        {
            return Ok(s.clone());
        }
        let path = self.file(&published, "stats.json");
        let json = std::fs::read(&path).map_err(|_| not_yet())?;
        let figures = serde_json::from_slice(&json).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "the export's figures do not read");
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the export's figures cannot be read; try again shortly",
            )
        })?;
        let stats = Arc::new(Stats {
            snapshot: published.manifest.snapshot.clone(),
            json,
            figures,
        });
        *cached = Some(stats.clone());
        Ok(stats)
    }
}

/// `GET /stats`: the ecosystem's figures from the latest export, as JSON, or as a page with
/// charts for a browser.
#[utoipa::path(
    get,
    path = "/stats",
    responses(
        (status = 200, description = "The figures of the latest export (its stats.json); a page of charts for browsers",
            content((Object = "application/json"), (String = "text/html"))),
        (status = 404, description = "No export is served here, or none is published yet", body = ApiError),
        (status = 503, description = "The export's figures cannot be read", body = ApiError),
    )
)]
pub async fn stats(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Failure> {
    let stats = data_dir(&app)?.stats()?;
    let html = crate::routes::wants_html(&headers);
    let (content_type, body) = if html {
        (
            "text/html; charset=utf-8",
            crate::html::stats(&stats.figures).into_bytes(),
        )
    } else {
        ("application/json", stats.json.clone())
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={}", app.cache_seconds)).expect("ascii"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(modified) = HeaderValue::from_str(
        &stats
            .figures
            .computed_at
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    ) {
        h.insert(header::LAST_MODIFIED, modified);
    }
    Ok(response)
}
