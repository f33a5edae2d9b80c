//! `manifest.json`: what a snapshot holds. The destination's root manifest names the published
//! snapshot; it is replaced in one put after every file of the new snapshot is written, so a
//! reader that starts from it never sees a half-written set, and an export that fails leaves the
//! previous one published.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use object_store::{ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};

use crate::dest::Destination;
use crate::stats::Tally;

/// Bumped when a file's columns change in a way a reader would notice.
pub const SCHEMA_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// The snapshot's directory under the root: `snapshots/<id>`; file paths are relative to it.
    pub snapshot: String,
    pub exported_at: DateTime<Utc>,
    /// The database's state the tables show (one consistent read).
    pub data_as_of: DateTime<Utc>,
    /// History recorded before this was exported; the next export rewrites the scan dates of
    /// anything recorded after it.
    pub history_recorded_before: DateTime<Utc>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Latest,
    History,
    Events,
    Stats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub kind: Kind,
    /// The scan date (history) or publish date (events) the file holds, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    /// Rows (Parquet) or lines (NDJSON).
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// A history file's figures, carried with it so the weekly figures never re-read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Tally>,
}

impl Manifest {
    pub fn entry(&self, kind: Kind, date: NaiveDate) -> Option<&FileEntry> {
        self.files
            .iter()
            .find(|f| f.kind == kind && f.date == Some(date))
    }
}

/// The published manifest, if the destination has one.
pub async fn published(dest: &Destination) -> anyhow::Result<Option<Manifest>> {
    let path = dest.path(MANIFEST);
    match dest.store.get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            let manifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {MANIFEST} of {}", dest.shown))?;
            Ok(Some(manifest))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {MANIFEST} of {}", dest.shown)),
    }
}

/// Writes `relative` whole, in one put.
pub async fn put_json<T: Serialize>(
    dest: &Destination,
    relative: &str,
    value: &T,
) -> anyhow::Result<(u64, String)> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    let sha = {
        use sha2::Digest as _;
        crate::dest::hex(&sha2::Sha256::digest(&bytes))
    };
    let len = bytes.len() as u64;
    dest.store
        .put(&dest.path(relative), PutPayload::from(bytes))
        .await
        .with_context(|| format!("writing {relative} to {}", dest.shown))?;
    Ok((len, sha))
}
