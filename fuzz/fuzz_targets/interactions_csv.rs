//! The interactions CSV reader (`recommender::read_csv_from`, what `train --input x.csv` and the
//! embedded trainer read) on arbitrary bytes.
//!
//! Invariants, beyond "does not panic":
//! - every accepted row obeys Personalize's rules: USER_ID and ITEM_ID re-parse as ids,
//!   EVENT_TYPE is not empty, TIMESTAMP is not negative, EVENT_VALUE is finite, and only present
//!   when the header has the column;
//! - accepted rows round-trip: written back the way training-export writes its CSV (quote when
//!   necessary, `\n` lines), they read back as the same rows, every one accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recommender::{InteractionRow, read_csv_from};
use schemas::interaction::{CSV_HEADER, CSV_HEADER_WITH_VALUE};
use schemas::{ItemId, UserId};

fuzz_target!(|data: &[u8]| {
    let Ok(rows) = read_csv_from("fuzz.csv", data) else { return };
    let has_value_column = header_has_value(data);
    let accepted: Vec<InteractionRow> = rows.take(10_000).filter_map(Result::ok).collect();
    for row in &accepted {
        assert!(UserId::parse(row.user_id.as_str()).is_ok(), "USER_ID {:?}", row.user_id);
        assert!(ItemId::parse(row.item_id.as_str()).is_ok(), "ITEM_ID {:?}", row.item_id);
        assert!(!row.event_type.is_empty());
        assert!(row.timestamp >= 0);
        if let Some(v) = row.event_value {
            assert!(v.is_finite());
            assert!(has_value_column, "EVENT_VALUE without the column");
        }
    }

    let written = write(&accepted, has_value_column);
    let again: Vec<InteractionRow> = read_csv_from("written.csv", written.as_slice())
        .unwrap_or_else(|e| panic!("our own CSV's header is refused: {e}"))
        .map(|r| r.unwrap_or_else(|e| panic!("a row we accepted and wrote back is refused: {e}")))
        .collect();
    assert_eq!(again, accepted, "round trip through the export's CSV format");
});

/// Whether the header the reader accepted has EVENT_VALUE: read it the way the reader does.
fn header_has_value(data: &[u8]) -> bool {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(data);
    let header = reader.headers().expect("the reader accepted this header");
    let found: Vec<&str> = header.iter().collect();
    assert!(found == CSV_HEADER || found == CSV_HEADER_WITH_VALUE, "accepted header {found:?}");
    found == CSV_HEADER_WITH_VALUE
}

/// Writes rows as training-export's `CsvSink` does.
fn write(rows: &[InteractionRow], with_value: bool) -> Vec<u8> {
    let mut out = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if with_value {
        out.write_record(CSV_HEADER_WITH_VALUE).unwrap();
    } else {
        out.write_record(CSV_HEADER).unwrap();
    }
    for r in rows {
        let ts = r.timestamp.to_string();
        let value = r.event_value.map(|v| v.to_string()).unwrap_or_default();
        if with_value {
            out.write_record([r.user_id.as_str(), r.item_id.as_str(), &ts, r.event_type.as_str(), &value])
                .unwrap();
        } else {
            out.write_record([r.user_id.as_str(), r.item_id.as_str(), &ts, r.event_type.as_str()]).unwrap();
        }
    }
    out.into_inner().expect("writing to memory")
}
