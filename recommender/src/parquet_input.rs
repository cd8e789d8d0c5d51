//! The Parquet half of [`crate::input`]: the analytics export read row by row. Behind the
//! `parquet` feature, so a binary that only reads the CSV (the ranking API) does not link
//! arrow and parquet.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::input::{InputError, InteractionRow, check_row};

/// Streams rows from the Parquet export (columns USER_ID utf8, ITEM_ID utf8, TIMESTAMP int64,
/// EVENT_TYPE utf8, EVENT_VALUE float32 nullable), one record batch in memory at a time.
pub fn read_parquet(path: impl AsRef<Path>) -> Result<ParquetRows, InputError> {
    let path = path.as_ref().to_path_buf();
    let file = File::open(&path).map_err(|source| InputError::Open { path: path.clone(), source })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| InputError::Parquet { path: path.clone(), reason: e.to_string() })?;
    Ok(ParquetRows { path, reader, batch: Vec::new().into_iter(), row: 0 })
}

/// Iterator over the rows of a Parquet file opened by [`read_parquet`].
pub struct ParquetRows {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: std::vec::IntoIter<Result<InteractionRow, InputError>>,
    row: u64,
}

fn column<'a>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &'static str,
    expected: &'static str,
) -> Result<&'a dyn Array, InputError> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| InputError::ParquetColumn {
        path: path.to_path_buf(),
        column: name,
        found: "missing".into(),
        expected,
    })
}

fn strings(path: &Path, batch: &RecordBatch, name: &'static str) -> Result<Vec<Option<String>>, InputError> {
    let col = column(path, batch, name, "utf8")?;
    let wrong = || InputError::ParquetColumn {
        path: path.to_path_buf(),
        column: name,
        found: col.data_type().to_string(),
        expected: "utf8",
    };
    if let Some(a) = col.as_string_opt::<i32>() {
        Ok(a.iter().map(|s| s.map(str::to_owned)).collect())
    } else if let Some(a) = col.as_string_opt::<i64>() {
        Ok(a.iter().map(|s| s.map(str::to_owned)).collect())
    } else if let Some(a) = col.as_string_view_opt() {
        Ok(a.iter().map(|s| s.map(str::to_owned)).collect())
    } else {
        Err(wrong())
    }
}

impl ParquetRows {
    fn decode(&mut self, batch: &RecordBatch) -> Result<Vec<Result<InteractionRow, InputError>>, InputError> {
        let path = self.path.as_path();
        let users = strings(path, batch, "USER_ID")?;
        let items = strings(path, batch, "ITEM_ID")?;
        let types = strings(path, batch, "EVENT_TYPE")?;
        let ts_col = column(path, batch, "TIMESTAMP", "int64")?;
        let timestamps: Vec<Option<i64>> = if let Some(a) = ts_col.as_primitive_opt::<Int64Type>() {
            a.iter().collect()
        } else if let Some(a) = ts_col.as_primitive_opt::<Int32Type>() {
            a.iter().map(|v| v.map(i64::from)).collect()
        } else {
            return Err(InputError::ParquetColumn {
                path: path.to_path_buf(),
                column: "TIMESTAMP",
                found: ts_col.data_type().to_string(),
                expected: "int64",
            });
        };
        let values: Vec<Option<f32>> = match batch.column_by_name("EVENT_VALUE") {
            None => vec![None; batch.num_rows()],
            Some(c) => {
                if let Some(a) = c.as_primitive_opt::<Float32Type>() {
                    a.iter().collect()
                } else if let Some(a) = c.as_primitive_opt::<Float64Type>() {
                    a.iter().map(|v| v.map(|v| v as f32)).collect()
                } else {
                    return Err(InputError::ParquetColumn {
                        path: path.to_path_buf(),
                        column: "EVENT_VALUE",
                        found: c.data_type().to_string(),
                        expected: "float32",
                    });
                }
            }
        };
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let row = self.row;
            self.row += 1;
            let parsed = (|| {
                let user = users[i].clone().ok_or("USER_ID is null")?;
                let item = items[i].clone().ok_or("ITEM_ID is null")?;
                let event_type = types[i].clone().ok_or("EVENT_TYPE is null")?;
                let timestamp = timestamps[i].ok_or("TIMESTAMP is null")?;
                check_row(&user, &item, timestamp, &event_type, values[i])?;
                Ok(InteractionRow {
                    user_id: user,
                    item_id: item,
                    timestamp,
                    event_type,
                    event_value: values[i],
                })
            })();
            out.push(parsed.map_err(|reason: String| InputError::ParquetRow {
                path: self.path.clone(),
                row,
                reason,
            }));
        }
        Ok(out)
    }
}

impl Iterator for ParquetRows {
    type Item = Result<InteractionRow, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.batch.next() {
                return Some(row);
            }
            let batch = match self.reader.next()? {
                Ok(b) => b,
                Err(e) => {
                    return Some(Err(InputError::Parquet { path: self.path.clone(), reason: e.to_string() }));
                }
            };
            match self.decode(&batch) {
                Ok(rows) => self.batch = rows.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
