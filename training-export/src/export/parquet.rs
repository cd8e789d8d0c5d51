//! The export's Parquet file (the `parquet` feature): Arrow builders on the export's task,
//! zstd encoding on a thread of its own.

use std::sync::Arc;

use arrow_array::builder::{Float32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use artifacts::ObjectWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use schemas::Interaction;

use super::{Chunk, ExportError};

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;
/// Rows per Parquet row group: large enough for analytics, small enough to keep the
/// in-progress row group a few MB.
const ROW_GROUP_ROWS: usize = 512 * 1024;

/// The Arrow schema of the Parquet file: the Personalize columns, same names.
pub fn parquet_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("USER_ID", DataType::Utf8, false),
        Field::new("ITEM_ID", DataType::Utf8, false),
        Field::new("TIMESTAMP", DataType::Int64, false),
        Field::new("EVENT_TYPE", DataType::Utf8, false),
        Field::new("EVENT_VALUE", DataType::Float32, true),
    ]))
}

fn parquet_error(e: parquet::errors::ParquetError) -> ExportError {
    ExportError::Encode { file: "Parquet", message: e.to_string() }
}

/// The Parquet side: Arrow builders for one batch on the export's task, and an
/// encoder thread that runs the `ArrowWriter` (encoding and zstd are the export's
/// heaviest work, so they overlap with reading and CSV writing). The encoder writes
/// into a shared chunk that the export drains into the object writer after every page.
/// At most two batches wait for the encoder, so memory stays bounded when it lags.
pub(super) struct ParquetSink {
    /// `None` once closed.
    batches: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    encoder: Option<std::thread::JoinHandle<Result<(), parquet::errors::ParquetError>>>,
    encoded: Chunk,
    pub(super) out: Box<dyn ObjectWriter>,
    users: StringBuilder,
    items: StringBuilder,
    timestamps: Int64Builder,
    types: StringBuilder,
    values: Float32Builder,
    pending: usize,
    pub(super) rows: u64,
}

impl ParquetSink {
    pub(super) fn new(out: Box<dyn ObjectWriter>) -> Result<Self, ExportError> {
        let props = WriterProperties::builder()
            // Level 1, zstd's (and pyarrow's) default: most of the size win for little CPU.
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let encoded = Chunk::default();
        let mut writer =
            ArrowWriter::try_new(encoded.clone(), parquet_schema(), Some(props)).map_err(parquet_error)?;
        let (batches, mut incoming) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let encoder = std::thread::Builder::new()
            .name("parquet-encoder".into())
            .spawn(move || {
                while let Some(batch) = incoming.blocking_recv() {
                    writer.write(&batch)?;
                }
                writer.close().map(|_| ())
            })
            .map_err(|e| ExportError::Encode {
                file: "Parquet",
                message: format!("starting the encoder: {e}"),
            })?;
        Ok(Self {
            batches: Some(batches),
            encoder: Some(encoder),
            encoded,
            out,
            users: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            items: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            timestamps: Int64Builder::with_capacity(BATCH_ROWS),
            types: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 12),
            values: Float32Builder::with_capacity(BATCH_ROWS),
            pending: 0,
            rows: 0,
        })
    }

    pub(super) fn push(&mut self, i: &Interaction) {
        self.users.append_value(i.user_id.as_str());
        self.items.append_value(i.item_id.as_str());
        self.timestamps.append_value(i.timestamp.epoch_seconds());
        self.types.append_value(i.event_type.as_str());
        self.values.append_option(i.event_value);
        self.pending += 1;
        self.rows += 1;
    }

    /// A whole batch is waiting for the encoder.
    pub(super) fn batch_full(&self) -> bool {
        self.pending >= BATCH_ROWS
    }

    pub(super) async fn write_batch(&mut self, force: bool) -> Result<(), ExportError> {
        if self.pending == 0 || (!force && self.pending < BATCH_ROWS) {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.users.finish()),
            Arc::new(self.items.finish()),
            Arc::new(self.timestamps.finish()),
            Arc::new(self.types.finish()),
            Arc::new(self.values.finish()),
        ];
        self.pending = 0;
        let batch = RecordBatch::try_new(parquet_schema(), columns)
            .map_err(|e| ExportError::Encode { file: "Parquet", message: e.to_string() })?;
        let sender = self.batches.as_ref().expect("not closed");
        if sender.send(batch).await.is_err() {
            // The encoder stopped: its result says why.
            return Err(self.join_encoder().await.err().unwrap_or_else(|| ExportError::Encode {
                file: "Parquet",
                message: "the encoder stopped early".into(),
            }));
        }
        Ok(())
    }

    /// Hands what the encoder has produced so far to the object writer.
    pub(super) async fn drain(&mut self) -> Result<(), ExportError> {
        let bytes = std::mem::take(&mut *self.encoded.0.lock().unwrap_or_else(|p| p.into_inner()));
        if !bytes.is_empty() {
            self.out.write_all(&bytes).await.map_err(ExportError::Upload)?;
        }
        Ok(())
    }

    async fn join_encoder(&mut self) -> Result<(), ExportError> {
        self.batches = None;
        let Some(encoder) = self.encoder.take() else { return Ok(()) };
        let joined = tokio::task::spawn_blocking(move || encoder.join()).await;
        match joined {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(parquet_error(e)),
            Ok(Err(_)) | Err(_) => {
                Err(ExportError::Encode { file: "Parquet", message: "the encoder thread panicked".into() })
            }
        }
    }

    /// Writes the last batch and the footer into the object writer, without finishing it.
    pub(super) async fn close(&mut self) -> Result<(), ExportError> {
        self.write_batch(true).await?;
        self.join_encoder().await?;
        self.drain().await
    }
}
