//! Reading the interactions we hand to Personalize: the CSV (`USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE`
//! and optionally `EVENT_VALUE`) and the Parquet export with the same columns. Both stream rows, so a
//! large export is never held twice.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use schemas::interaction::{CSV_HEADER, CSV_HEADER_WITH_VALUE};
use schemas::{ItemId, UserId};

/// One interaction as the recommender sees it. Ids are plain strings already checked against
/// Personalize's rules; the timestamp is epoch seconds without the platform's 2000..2100 bound,
/// because public evaluation data (MovieLens, 1997) predates it.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionRow {
    pub user_id: String,
    pub item_id: String,
    pub timestamp: i64,
    pub event_type: String,
    pub event_value: Option<f32>,
}

impl From<&schemas::Interaction> for InteractionRow {
    fn from(i: &schemas::Interaction) -> Self {
        Self {
            user_id: i.user_id.as_str().to_owned(),
            item_id: i.item_id.as_str().to_owned(),
            timestamp: i.timestamp.epoch_seconds(),
            event_type: i.event_type.as_str().to_owned(),
            event_value: i.event_value,
        }
    }
}

/// Why an interactions file could not be read. Every variant names the file; row errors name
/// the line (CSV, 1-based, header is line 1) or the row (Parquet, 0-based).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: the header is {found:?}; expected {expected:?} (EVENT_VALUE optional)")]
    Header { path: PathBuf, found: Vec<String>, expected: Vec<&'static str> },
    #[error("{path}, line {line}: {reason}")]
    CsvRow { path: PathBuf, line: u64, reason: String },
    #[error("{path}: not a readable Parquet file: {reason}")]
    Parquet { path: PathBuf, reason: String },
    #[error("{path}: column {column} is missing or has type {found}; expected {expected}")]
    ParquetColumn { path: PathBuf, column: &'static str, found: String, expected: &'static str },
    #[error("{path}, row {row}: {reason}")]
    ParquetRow { path: PathBuf, row: u64, reason: String },
}

pub(crate) fn check_row(
    user: &str,
    item: &str,
    timestamp: i64,
    event_type: &str,
    value: Option<f32>,
) -> Result<(), String> {
    UserId::parse(user).map_err(|e| format!("USER_ID: {e}"))?;
    ItemId::parse(item).map_err(|e| format!("ITEM_ID: {e}"))?;
    if event_type.is_empty() {
        return Err("EVENT_TYPE is empty".into());
    }
    if timestamp < 0 {
        return Err(format!("TIMESTAMP {timestamp} is negative; expected epoch seconds"));
    }
    if let Some(v) = value
        && !v.is_finite()
    {
        return Err(format!("EVENT_VALUE {v} is not a finite number"));
    }
    Ok(())
}

/// Streams rows from a Personalize interactions CSV. Opening checks the header; each row is
/// checked as it is read, and a bad row yields an error naming its line.
pub fn read_csv(path: impl AsRef<Path>) -> Result<CsvRows, InputError> {
    let path = path.as_ref().to_path_buf();
    let file = File::open(&path).map_err(|source| InputError::Open { path: path.clone(), source })?;
    read_csv_from(path, file)
}

/// [`read_csv`] over any reader (an upload, a decompressor, bytes in memory). `name` only
/// labels error messages, where a path would stand.
pub fn read_csv_from<R: Read>(name: impl Into<PathBuf>, source: R) -> Result<CsvRows<R>, InputError> {
    let path = name.into();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(source);
    let header = reader
        .headers()
        .map_err(|e| InputError::CsvRow { path: path.clone(), line: 1, reason: e.to_string() })?
        .clone();
    let found: Vec<String> = header.iter().map(str::to_owned).collect();
    let has_value = if found == CSV_HEADER {
        false
    } else if found == CSV_HEADER_WITH_VALUE {
        true
    } else {
        return Err(InputError::Header { path, found, expected: CSV_HEADER_WITH_VALUE.to_vec() });
    };
    Ok(CsvRows { path, reader, record: csv::StringRecord::new(), has_value })
}

/// Iterator over the rows of a CSV opened by [`read_csv`].
pub struct CsvRows<R = File> {
    path: PathBuf,
    reader: csv::Reader<R>,
    record: csv::StringRecord,
    has_value: bool,
}

impl<R> CsvRows<R> {
    fn parse_record(&self) -> Result<InteractionRow, String> {
        let r = &self.record;
        let timestamp: i64 = r[2]
            .trim()
            .parse()
            .map_err(|_| format!("TIMESTAMP {:?} is not an integer (epoch seconds)", &r[2]))?;
        let event_value = if self.has_value && !r[4].trim().is_empty() {
            Some(r[4].trim().parse::<f32>().map_err(|_| format!("EVENT_VALUE {:?} is not a number", &r[4]))?)
        } else {
            None
        };
        check_row(&r[0], &r[1], timestamp, &r[3], event_value)?;
        Ok(InteractionRow {
            user_id: r[0].to_owned(),
            item_id: r[1].to_owned(),
            timestamp,
            event_type: r[3].to_owned(),
            event_value,
        })
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<InteractionRow, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some(self.parse_record().map_err(|reason| InputError::CsvRow {
                    path: self.path.clone(),
                    line,
                    reason,
                }))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("{len} fields where the header has {expected_len}")
                    }
                    _ => e.to_string(),
                };
                Some(Err(InputError::CsvRow { path: self.path.clone(), line, reason }))
            }
        }
    }
}

/// Opens either format by extension: `.parquet` is Parquet, anything else is CSV.
pub fn read_interactions(
    path: impl AsRef<Path>,
) -> Result<Box<dyn Iterator<Item = Result<InteractionRow, InputError>>>, InputError> {
    let path = path.as_ref();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        #[cfg(feature = "parquet")]
        return Ok(Box::new(crate::parquet_input::read_parquet(path)?));
        #[cfg(not(feature = "parquet"))]
        return Err(InputError::Parquet {
            path: path.to_path_buf(),
            reason: "this build reads CSV only: the recommender's `parquet` feature is off".into(),
        });
    } else {
        Ok(Box::new(read_csv(path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_csv_from_memory_and_names_the_source_in_errors() {
        let data = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\nu1,\"a, b\",1763632800,enrolled,1.5\nu2,,1,enrolled,\n";
        let rows: Vec<_> = read_csv_from("upload.csv", data.as_bytes()).unwrap().collect();
        assert_eq!(
            rows[0].as_ref().unwrap(),
            &InteractionRow {
                user_id: "u1".into(),
                item_id: "a, b".into(),
                timestamp: 1_763_632_800,
                event_type: "enrolled".into(),
                event_value: Some(1.5),
            }
        );
        let err = rows[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("upload.csv, line 3: ITEM_ID"), "{err}");
        let err = read_csv_from("upload.csv", "user,item\n".as_bytes()).err().unwrap().to_string();
        assert!(err.contains("the header is"), "{err}");
    }
}
