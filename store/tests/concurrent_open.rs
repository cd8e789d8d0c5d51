//! Many connections opening one fresh store.db at the same instant, as several
//! local processes (`event-consumer handle`, the API, `training-export`) do. Each
//! must wait for the others instead of failing with "database is locked".

use std::sync::{Arc, Barrier};

const OPENERS: usize = 16;

#[test]
fn simultaneous_opens_of_a_fresh_file_all_succeed() {
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join(store::embedded::FILE_NAME));
        let start = Arc::new(Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|i| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    if i % 2 == 0 {
                        store::embedded::EmbeddedStore::open(&path).map(drop).map_err(|e| e.to_string())
                    } else {
                        // Another crate's tables in the same file, opened the same way.
                        let mut conn = store::embedded::open_connection(&path).map_err(|e| e.to_string())?;
                        store::embedded::apply_schema(
                            &mut conn,
                            "CREATE TABLE IF NOT EXISTS other (k TEXT PRIMARY KEY);",
                            |tx| tx.execute("DELETE FROM other WHERE k < 'a'", []).map(drop),
                        )
                        .map_err(|e| e.to_string())
                    }
                })
            })
            .collect();
        for (i, opener) in openers.into_iter().enumerate() {
            let outcome = opener.join().unwrap();
            assert!(outcome.is_ok(), "round {round}, opener {i}: {outcome:?}");
        }
        let store = store::embedded::EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.count_blocking().unwrap(), 0);
    }
}
