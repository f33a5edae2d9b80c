//! Where an export goes: a local directory or an object store, through `object_store`, and the
//! one writer every file is written with (it counts and hashes what it writes, for the manifest).
//! On a disk every file and rename is fsynced before the manifest names it, and a large file is
//! staged and renamed into place; in a bucket it is a multipart upload.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone)]
pub struct Destination {
    pub store: Arc<dyn ObjectStore>,
    /// The export's root inside the store: manifest.json and snapshots/ live under it.
    pub root: Path,
    /// For messages: the destination as given, without credentials.
    pub shown: String,
    /// The directory, when the destination is one on this machine.
    pub local: Option<std::path::PathBuf>,
}

impl Destination {
    /// `to`: a directory path, or a URL `object_store` knows (file://, s3://, gs://, az://...),
    /// with the cloud's settings read from the environment.
    pub fn parse(to: &str) -> anyhow::Result<Self> {
        let shown = fleet_runtime::config::redact_url(to);
        let url = if to.contains("://") {
            url::Url::parse(to)
                .with_context(|| format!("reading the export destination {shown}"))?
        } else {
            std::fs::create_dir_all(to)
                .with_context(|| format!("creating the export directory {to}"))?;
            let dir = std::fs::canonicalize(to)
                .with_context(|| format!("resolving the export directory {to}"))?;
            url::Url::from_directory_path(&dir)
                .map_err(|()| anyhow::anyhow!("{} is not an absolute directory", dir.display()))?
        };
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("{shown} is not a local directory"))?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the export directory {}", dir.display()))?;
            // Directories emptied by a removed snapshot go too, as a bucket has none; every file
            // and rename reaches the disk before the manifest names it.
            let store = LocalFileSystem::new_with_prefix(&dir)
                .with_context(|| format!("opening the export directory {}", dir.display()))?
                .with_automatic_cleanup(true)
                .with_fsync(true);
            return Ok(Self {
                store: Arc::new(store),
                root: Path::default(),
                shown,
                local: Some(dir),
            });
        }
        let (store, root) = object_store::parse_url_opts(&url, std::env::vars())
            .with_context(|| format!("opening the export destination {shown}"))?;
        Ok(Self {
            store: Arc::from(store),
            root,
            shown,
            local: None,
        })
    }

    /// `relative` (slash-separated) under the root.
    pub fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.clone().join(part))
    }

    pub fn writer(&self, relative: &str) -> Hashed {
        Hashed {
            inner: BufWriter::new(self.store.clone(), self.path(relative)),
            hash: Sha256::new(),
            bytes: 0,
        }
    }
}

/// A file being written: multipart for large files (the store's own upload; a local file is
/// staged and renamed into place), counted and hashed as it goes.
pub struct Hashed {
    inner: BufWriter,
    hash: Sha256,
    bytes: u64,
}

/// What a finished file was.
#[derive(Debug, Clone)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
}

impl Hashed {
    pub async fn put(&mut self, bytes: Bytes) -> object_store::Result<()> {
        self.hash.update(&bytes);
        self.bytes += bytes.len() as u64;
        self.inner.put(bytes).await
    }

    pub async fn finish(mut self) -> std::io::Result<Written> {
        tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await?;
        Ok(self.written())
    }

    /// What was written so far (after the Parquet writer completed it: the whole file).
    pub fn written(&self) -> Written {
        Written {
            bytes: self.bytes,
            sha256: hex(&self.hash.clone().finalize()),
        }
    }
}

impl AsyncFileWriter for Hashed {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.put(bs)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            tokio::io::AsyncWriteExt::shutdown(&mut self.inner)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
