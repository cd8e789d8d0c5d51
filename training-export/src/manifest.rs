//! `manifest.json`: the last file of an export, and the proof that it is complete. It
//! records what was written (sizes and SHA-256 of each file) and what is in it (row
//! counts, distinct users and items, the time range), which is everything the
//! pre-import validation needs: nothing is re-read to decide whether to import.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning; readers refuse versions they do not know.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;
/// Personalize's minimum for training and for any import job.
pub const MIN_INTERACTIONS: u64 = 1_000;
/// Personalize's minimum number of users with at least two interactions.
pub const MIN_USERS_WITH_TWO: u64 = 25;

/// One file of the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedFile {
    /// The object, or for a file in parts the folder that holds them (ending in `/`:
    /// Personalize imports every CSV under a folder).
    pub key: String,
    pub rows: u64,
    pub size: u64,
    /// The object's SHA-256; for a file in parts, the SHA-256 of the parts' hex digests,
    /// one per line in order.
    pub sha256: String,
    /// The parts, in order, when the export was converted from a table export file by file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ExportedFile>,
}

impl ExportedFile {
    pub fn new(key: String, rows: u64, size: u64, sha256: String) -> Self {
        Self { key, rows, size, sha256, parts: vec![] }
    }

    /// One file made of `parts` under the folder `folder`.
    pub fn in_parts(folder: String, parts: Vec<ExportedFile>) -> Self {
        let digests: String = parts.iter().map(|p| format!("{}\n", p.sha256)).collect();
        Self {
            key: folder,
            rows: parts.iter().map(|p| p.rows).sum(),
            size: parts.iter().map(|p| p.size).sum(),
            sha256: artifacts::sha256_hex(digests.as_bytes()),
            parts,
        }
    }

    /// The objects that hold the file's rows, in order: itself, or its parts.
    pub fn objects(&self) -> Vec<&ExportedFile> {
        match (self.parts.is_empty(), self.key.ends_with('/')) {
            (true, false) => vec![self],
            // An empty folder: a table export with no data files.
            _ => self.parts.iter().collect(),
        }
    }
}

/// A stored record that did not parse, by key (the first few are listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEntry {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RejectedSummary {
    pub count: u64,
    /// The first few rejected records; `count` says how many there were in all.
    pub first: Vec<RejectedEntry>,
}

/// The rows added since the previous import, written beside the full file so an
/// INCREMENTAL import has something small to import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSummary {
    /// The previous import's newest timestamp: rows after it are new.
    pub since: i64,
    /// The delta file also repeats rows from `overlap_from` to `since`, so events that
    /// arrived late are caught; Personalize collapses identical events into one.
    pub overlap_from: i64,
    /// Rows strictly newer than `since`: what decides between INCREMENTAL and FULL.
    pub new_rows: u64,
    pub file: ExportedFile,
}

/// What a delta-only export (an incremental table export) holds: the items written from
/// `from` (inclusive) to `to` (exclusive), as new images. Its CSV is imported INCREMENTAL
/// into a dataset that has the earlier data; it is not the whole data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncrementalScope {
    pub from: i64,
    pub to: i64,
    /// Deletes in the window (a line with no new image): skipped, since Personalize's
    /// INCREMENTAL import only adds and replaces.
    pub deletes_skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: String,
    /// Epoch seconds when the export finished.
    pub created_at: i64,
    /// The exact CSV header written (Personalize matches columns by it).
    pub csv_header: Vec<String>,
    pub csv: ExportedFile,
    /// The analytics copy; absent when the export was written by a build without the
    /// `parquet` feature (the ranking API's first run on a laptop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ExportedFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaSummary>,
    pub rows: u64,
    pub distinct_users: u64,
    pub distinct_items: u64,
    pub users_with_two_or_more: u64,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    /// Longest USER_ID and ITEM_ID written, in characters (Personalize allows 256).
    pub max_user_id_chars: u64,
    pub max_item_id_chars: u64,
    /// Rows with an empty USER_ID, ITEM_ID or EVENT_TYPE as written.
    pub rows_with_empty_fields: u64,
    pub rows_with_event_value: u64,
    pub event_types: BTreeMap<String, u64>,
    pub rejected: RejectedSummary,
    /// Set when the export is delta-only; absent for a whole-table export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalScope>,
}

/// Why an export must not reach Personalize. Never retryable: the same data fails
/// the same way; the next night's export is the retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the export fails validation: {}", problems.join("; "))]
pub struct ValidationFailure {
    pub problems: Vec<String>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest.json does not parse: {e}"))?;
        if manifest.schema_version != MANIFEST_SCHEMA_VERSION {
            return Err(format!(
                "manifest schema version {} is not the supported {MANIFEST_SCHEMA_VERSION}",
                manifest.schema_version
            ));
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Checks Personalize's import and training minimums against the export's own
    /// counts, before anything is imported. Reports every problem, not just the first.
    /// A delta-only export is not checked for the training minimum of users (the dataset
    /// it is added to has the earlier data); every other rule applies.
    pub fn validate(&self) -> Result<(), ValidationFailure> {
        let mut problems = Vec::new();
        if self.rows < MIN_INTERACTIONS {
            problems
                .push(format!("{} interactions; Personalize needs at least {MIN_INTERACTIONS}", self.rows));
        }
        if self.incremental.is_none() && self.users_with_two_or_more < MIN_USERS_WITH_TWO {
            problems.push(format!(
                "{} users with 2 or more interactions; Personalize needs at least {MIN_USERS_WITH_TWO}",
                self.users_with_two_or_more
            ));
        }
        let limit = schemas::MAX_ID_CHARS as u64;
        if self.max_user_id_chars > limit {
            problems
                .push(format!("a USER_ID has {} characters; the limit is {limit}", self.max_user_id_chars));
        }
        if self.max_item_id_chars > limit {
            problems
                .push(format!("an ITEM_ID has {} characters; the limit is {limit}", self.max_item_id_chars));
        }
        if self.rows_with_empty_fields > 0 {
            problems.push(format!("{} rows have an empty required field", self.rows_with_empty_fields));
        }
        let parquet_rows = self.parquet.as_ref().map(|p| p.rows);
        if self.csv.rows != self.rows || parquet_rows.is_some_and(|rows| rows != self.rows) {
            problems.push(format!(
                "file row counts disagree: csv {}, parquet {}, manifest {}",
                self.csv.rows,
                parquet_rows.map_or_else(|| "none".to_owned(), |rows| rows.to_string()),
                self.rows
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(ValidationFailure { problems }) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn valid() -> Manifest {
        let file = |key: &str, rows| ExportedFile::new(key.into(), rows, 10, "00".into());
        Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            run_id: "r".into(),
            created_at: 1_795_000_000,
            csv_header: vec!["USER_ID".into()],
            csv: file("exports/r/interactions.csv", 1_000),
            parquet: Some(file("exports/r/interactions.parquet", 1_000)),
            delta: None,
            rows: 1_000,
            distinct_users: 30,
            distinct_items: 5,
            users_with_two_or_more: 25,
            min_timestamp: Some(1_790_000_000),
            max_timestamp: Some(1_795_000_000),
            max_user_id_chars: 256,
            max_item_id_chars: 8,
            rows_with_empty_fields: 0,
            rows_with_event_value: 0,
            event_types: BTreeMap::from([("enrolled".into(), 1_000)]),
            rejected: RejectedSummary::default(),
            incremental: None,
        }
    }

    #[test]
    fn a_delta_only_export_needs_no_minimum_of_users_but_keeps_the_other_rules() {
        let mut m = valid();
        m.users_with_two_or_more = 3;
        assert!(m.validate().is_err(), "a whole export needs 25 users with two");
        m.incremental = Some(IncrementalScope { from: 1, to: 2, deletes_skipped: 0 });
        assert_eq!(m.validate(), Ok(()));
        m.max_user_id_chars = 257;
        assert!(m.validate().unwrap_err().to_string().contains("USER_ID"));
        m.max_user_id_chars = 10;
        m.rows = 999;
        m.csv.rows = 999;
        assert!(m.validate().unwrap_err().to_string().contains("999 interactions"));
    }

    #[test]
    fn the_minimums_pass_exactly_at_the_limit() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut m = valid();
        m.rows = 999;
        m.csv.rows = 999;
        m.parquet.as_mut().unwrap().rows = 999;
        m.users_with_two_or_more = 24;
        m.max_user_id_chars = 257;
        m.max_item_id_chars = 300;
        m.rows_with_empty_fields = 2;
        let problems = m.validate().unwrap_err().problems;
        assert_eq!(
            problems,
            vec![
                "999 interactions; Personalize needs at least 1000",
                "24 users with 2 or more interactions; Personalize needs at least 25",
                "a USER_ID has 257 characters; the limit is 256",
                "an ITEM_ID has 300 characters; the limit is 256",
                "2 rows have an empty required field",
            ]
        );
    }

    #[test]
    fn files_that_disagree_with_the_count_fail() {
        let mut m = valid();
        m.parquet.as_mut().unwrap().rows = 998;
        assert!(m.validate().unwrap_err().to_string().contains("parquet 998"));
    }

    #[test]
    fn manifests_round_trip_and_unknown_versions_are_refused() {
        let m = valid();
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        let mut future = m.clone();
        future.schema_version = 2;
        assert!(Manifest::parse(&future.to_json()).unwrap_err().contains("schema version 2"));
        assert!(Manifest::parse(b"{").unwrap_err().contains("does not parse"));
    }
}
