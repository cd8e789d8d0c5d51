//! The table export without AWS: a scan of any interaction source written in the layout
//! DynamoDB's `ExportTableToPointInTime` writes (gzipped DynamoDB JSON data files,
//! `manifest-files.json`, `manifest-summary.json`), synchronously, so `start` returns a
//! completed export. It lets the conversion path, its checkpoints and its crash tests run
//! offline on exactly the input it gets in AWS.
//!
//! A record the store cannot parse is written with the key parts it has and nothing
//! else, so the conversion rejects it too (with a "missing" reason rather than the store's).
//!
//! An incremental export (a window) writes DynamoDB's incremental lines (`Metadata`,
//! `Keys`, `NewImage`) for the items written in the window. The embedded store keeps no
//! write time, so offline an item's write time is its event timestamp: the window holds
//! the interactions whose `timestamp` is in `[from, to)`. (In AWS it is the time DynamoDB
//! wrote the item, so an event delivered late is in the window it arrived in; offline it
//! is in the window of its timestamp.) Records the store cannot parse have no timestamp
//! and are in full exports only.

use std::io::Write as _;
use std::sync::Arc;

use artifacts::ObjectStore;
use async_trait::async_trait;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use store::InteractionSource;
use store::item::{self, Stored};

use super::{StartedExport, TableExportError, TableExportStatus, TableExporter};
use crate::run::ExportWindow;

/// Items per data file: small, so that even a laptop's table has several files to
/// convert (and to crash between). DynamoDB's own files are far bigger.
pub const DEFAULT_ITEMS_PER_FILE: usize = 1_000;

pub struct EmbeddedTableExporter {
    source: Arc<dyn InteractionSource>,
    objects: Arc<dyn ObjectStore>,
    items_per_file: usize,
}

impl EmbeddedTableExporter {
    pub fn new(source: Arc<dyn InteractionSource>, objects: Arc<dyn ObjectStore>) -> Self {
        Self { source, objects, items_per_file: DEFAULT_ITEMS_PER_FILE }
    }

    pub fn with_items_per_file(mut self, items: usize) -> Self {
        self.items_per_file = items.max(1);
        self
    }

    /// `<prefix>/AWSDynamoDB/<export id>/`: the export id is the client token's, so the same
    /// token finds the same export.
    fn export_root(s3_prefix: &str, client_token: &str) -> String {
        let id: String = client_token
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        format!("{}/AWSDynamoDB/{id}", s3_prefix.trim_end_matches('/'))
    }

    async fn write(&self, root: &str, window: Option<ExportWindow>) -> Result<(), TableExportError> {
        let mut files = Vec::new();
        let mut lines = Vec::new();
        let mut total = 0u64;
        let mut pages = self.source.scan_segment(0, 1);
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| TableExportError { message: e.to_string(), retryable: e.is_retryable() })?;
            let written = |i: &&schemas::Interaction| {
                window.is_none_or(|w| (w.from..w.to).contains(&i.timestamp.epoch_seconds()))
            };
            let items = page.interactions.iter().filter(written).map(|i| {
                let attributes = item::attributes(i)
                    .into_iter()
                    .map(|(name, value)| {
                        let value = match value {
                            Stored::S(s) => json!({ "S": s }),
                            Stored::N(n) => json!({ "N": n }),
                        };
                        (name.to_owned(), value)
                    })
                    .collect::<Map<String, Value>>();
                match window {
                    None => json!({ "Item": attributes }),
                    Some(_) => {
                        let keys: Map<String, Value> = [item::USER_ID, item::EVENT_ID]
                            .iter()
                            .filter_map(|k| attributes.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                            .collect();
                        let micros = i.timestamp.epoch_seconds().saturating_mul(1_000_000).to_string();
                        json!({
                            "Metadata": { "WriteTimestampMicros": { "N": micros } },
                            "Keys": keys,
                            "NewImage": attributes,
                        })
                    }
                }
            });
            let broken = page.rejected.iter().filter(|_| window.is_none()).map(|r| {
                let (user, event) = r.key.split_once('/').unwrap_or((&r.key, "?"));
                json!({ "Item": Map::from_iter([
                    (item::USER_ID.to_owned(), json!({ "S": user })),
                    (item::EVENT_ID.to_owned(), json!({ "S": event })),
                ]) })
            });
            for line in items.chain(broken) {
                lines.push(line.to_string());
                total += 1;
                if lines.len() == self.items_per_file {
                    files.push(self.data_file(root, files.len(), &std::mem::take(&mut lines)).await?);
                }
            }
        }
        if !lines.is_empty() {
            files.push(self.data_file(root, files.len(), &lines).await?);
        }
        let listing: String = files.iter().map(|f| format!("{f}\n")).collect();
        let files_key = format!("{root}/manifest-files.json");
        self.put(&files_key, listing.as_bytes()).await?;
        let summary = json!({
            "version": "2020-06-30",
            "manifestFilesS3Key": files_key,
            "itemCount": total,
            "outputFormat": "DYNAMODB_JSON",
            "exportType": if window.is_some() { "INCREMENTAL_EXPORT" } else { "FULL_EXPORT" },
        });
        // Last: its presence is what makes the export complete.
        self.put(&format!("{root}/manifest-summary.json"), summary.to_string().as_bytes()).await
    }

    async fn data_file(&self, root: &str, n: usize, lines: &[String]) -> Result<Value, TableExportError> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        for line in lines {
            gz.write_all(line.as_bytes()).and_then(|()| gz.write_all(b"\n")).expect("writing to memory");
        }
        let bytes = gz.finish().expect("writing to memory");
        let key = format!("{root}/data/{n:05}.json.gz");
        self.put(&key, &bytes).await?;
        Ok(json!({ "itemCount": lines.len(), "dataFileS3Key": key }))
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), TableExportError> {
        self.objects
            .put(key, bytes)
            .await
            .map(drop)
            .map_err(|e| TableExportError { message: e.to_string(), retryable: e.is_retryable() })
    }
}

#[async_trait]
impl TableExporter for EmbeddedTableExporter {
    async fn table_size_bytes(&self) -> Result<Option<u64>, TableExportError> {
        Ok(None)
    }

    /// A full export's time is when it was written; the same token a second time finds
    /// the export written before and says no time (the pipeline then takes the time it
    /// asked, which is no later).
    async fn start(
        &self,
        client_token: &str,
        s3_prefix: &str,
        window: Option<ExportWindow>,
    ) -> Result<StartedExport, TableExportError> {
        let root = Self::export_root(s3_prefix, client_token);
        let summary = format!("{root}/manifest-summary.json");
        let done = self
            .objects
            .get(&summary)
            .await
            .map_err(|e| TableExportError { message: e.to_string(), retryable: e.is_retryable() })?
            .is_some();
        let mut export_time = None;
        if !done {
            export_time = window.is_none().then(|| time::OffsetDateTime::now_utc().unix_timestamp());
            self.write(&root, window).await?;
        }
        Ok(StartedExport { export_id: summary, export_time })
    }

    /// The export id is its summary's key.
    async fn status(&self, export_id: &str) -> Result<TableExportStatus, TableExportError> {
        match self.objects.get(export_id).await {
            Ok(Some(_)) => Ok(TableExportStatus::Completed { manifest_key: export_id.to_owned() }),
            Ok(None) => {
                Ok(TableExportStatus::Failed(format!("{} does not exist", self.objects.location(export_id))))
            }
            Err(e) => Err(TableExportError { message: e.to_string(), retryable: e.is_retryable() }),
        }
    }
}
