//! The recommender through its public API: training on tiny data where the answer is obvious,
//! queries, model files and the registry.

use std::io::Write;

use recommender::{
    DecodeError, IalsParams, InputError, InteractionRow, LiveModel, Model, ModelFileError, ModelRegistry,
    ModelSpec, QueryOptions, Refresh, RegistryError, TrainConfig, TrainError, read_csv, read_parquet, train,
    try_train,
};

fn row(user: &str, item: &str, t: i64) -> InteractionRow {
    InteractionRow {
        user_id: user.into(),
        item_id: item.into(),
        timestamp: 1_767_225_600 + t,
        event_type: "enrolled".into(),
        event_value: None,
    }
}

/// Students who took A also took B (and some then E); a larger, separate crowd took C and D (and
/// some then F), so C is the most popular class overall. `new-a` has taken only A.
/// Popularity: C 13, D 10, A 7, B 6, F 5, E 4. E and F mostly come last in time, but not always,
/// so a time-held-out slice can still learn them.
fn took_a_took_b() -> Vec<InteractionRow> {
    let mut rows = Vec::new();
    for s in 0..6 {
        rows.push(row(&format!("ab-{s}"), "A", s));
        rows.push(row(&format!("ab-{s}"), "B", s + 100));
        if s < 3 {
            rows.push(row(&format!("ab-{s}"), "E", s + 200));
        }
        if s == 3 {
            rows.push(row(&format!("ab-{s}"), "E", s - 50));
        }
    }
    for s in 0..10 {
        rows.push(row(&format!("cd-{s}"), "C", s));
        rows.push(row(&format!("cd-{s}"), "D", s + 100));
        if s < 4 {
            rows.push(row(&format!("cd-{s}"), "F", s + 200));
        }
        if s == 5 {
            rows.push(row(&format!("cd-{s}"), "F", s - 50));
        }
    }
    for s in 0..3 {
        rows.push(row(&format!("c-{s}"), "C", s));
    }
    rows.push(row("new-a", "A", 500));
    rows
}

fn small_ials() -> IalsParams {
    IalsParams { factors: 8, regularization: 0.1, alpha: 10.0, iterations: 10, cg_steps: 3 }
}

fn forced(spec: ModelSpec) -> TrainConfig {
    TrainConfig { model: Some(spec), trained_at: Some(1_767_225_600), ..TrainConfig::default() }
}

fn every_model() -> Vec<ModelSpec> {
    vec![
        ModelSpec::ItemKnn { neighbours: 10, shrink: 0.0 },
        ModelSpec::Ease { lambda: 1.0 },
        ModelSpec::Ials(small_ials()),
        ModelSpec::EaseIals { lambda: 1.0, ials: small_ials(), ease_weight: 0.5 },
    ]
}

#[test]
fn a_new_a_student_gets_b_first_from_every_personalized_model() {
    for spec in every_model() {
        let model = train(took_a_took_b(), &forced(spec.clone())).unwrap();
        let recs = model.recommend("new-a", 3, &QueryOptions::default());
        assert!(recs.personalized);
        assert_eq!(recs.items[0].0, "B", "{} ranked {:?}", spec.name(), recs.items);
        // A is already taken, so it is not recommended again.
        assert!(recs.items.iter().all(|(id, _)| id != "A"), "{}", spec.name());
        // Best first, scores comparable within the response.
        assert!(recs.items.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn automatic_choice_records_its_figures_and_still_answers_b() {
    let config = TrainConfig {
        ials: small_ials(),
        ease_lambdas: vec![1.0],
        trained_at: Some(1_767_225_600),
        ..TrainConfig::default()
    };
    let model = train(took_a_took_b(), &config).unwrap();
    let info = model.info();
    assert_eq!(info.selection.method, "time-held-out validation");
    assert!(info.selection.validation_users > 0);
    // popularity, item-knn, ials, one EASE and three blends, best first.
    assert_eq!(info.selection.candidates.len(), 7);
    assert!(info.selection.candidates.windows(2).all(|w| w[0].ndcg_at_10 >= w[1].ndcg_at_10));
    assert_eq!(info.spec, info.selection.candidates[0].spec);
    assert_eq!(info.model, info.spec.name());
    // The stored spec names the model as the CLI and `evaluate` do.
    let spec_json = serde_json::to_value(&info.spec).unwrap();
    assert_eq!(spec_json["model"], info.model.as_str());
    assert_eq!((info.users, info.items, info.interactions, info.rows), (20, 6, 45, 45));
    // The held-out E and F follow from A/B and C/D, which popularity cannot see.
    assert!(info.spec.is_personalized(), "chose {:?}", info.spec);
    assert_eq!(model.recommend("new-a", 1, &QueryOptions::default()).items[0].0, "B");
}

#[test]
fn unknown_users_get_popular_items_unpersonalized() {
    let model = train(took_a_took_b(), &forced(ModelSpec::Ease { lambda: 1.0 })).unwrap();
    assert!(!model.knows_user("stranger"));
    let recs = model.recommend("stranger", 2, &QueryOptions::default());
    assert!(!recs.personalized);
    assert_eq!(recs.items, model.popular(2));
    // C: 13 students, D: 10 (recency decay is negligible over these few minutes).
    let ids: Vec<&str> = recs.items.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["C", "D"]);
}

#[test]
fn an_empty_history_is_an_unknown_user() {
    // Every event of "lurker" has a zero weight, so the student has no history at all.
    let mut rows = took_a_took_b();
    rows.push(InteractionRow { event_type: "viewed".into(), ..row("lurker", "B", 7) });
    let config = TrainConfig {
        event_weights: [("enrolled".to_string(), 1.0), ("viewed".to_string(), 0.0)].into(),
        ..forced(ModelSpec::ItemKnn { neighbours: 10, shrink: 0.0 })
    };
    let model = train(rows, &config).unwrap();
    assert!(!model.knows_user("lurker"));
    assert!(model.history("lurker").is_empty());
    assert!(!model.recommend("lurker", 3, &QueryOptions::default()).personalized);
    assert_eq!(model.history("new-a"), ["A"]);
}

#[test]
fn no_interactions_is_an_error_not_an_empty_model() {
    let err = train(Vec::new(), &TrainConfig::default()).unwrap_err();
    assert!(matches!(err, TrainError::NoInteractions), "{err}");
}

#[test]
fn seen_items_filters_and_n_are_respected() {
    let model = train(took_a_took_b(), &forced(ModelSpec::Ease { lambda: 1.0 })).unwrap();
    let all = model.recommend("ab-0", 10, &QueryOptions::default().include_seen());
    assert_eq!(all.items.len(), 6);
    let unseen = model.recommend("ab-0", 10, &QueryOptions::default());
    let mut ids: Vec<&str> = unseen.items.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["C", "D", "F"]);
    let not_c = |id: &str| id != "C";
    let filtered = model.recommend("ab-0", 10, &QueryOptions::default().with_filter(&not_c));
    let mut ids: Vec<&str> = filtered.items.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["D", "F"]);
    assert!(model.recommend("ab-0", 0, &QueryOptions::default()).items.is_empty());
    // The filter also applies to the popular fallback.
    let fallback = model.recommend("stranger", 10, &QueryOptions::default().with_filter(&not_c));
    let ids: Vec<&str> = fallback.items.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["D", "A", "B", "F", "E"]);
}

#[test]
fn rerank_puts_unknown_items_last_in_input_order() {
    let model = train(took_a_took_b(), &forced(ModelSpec::Ease { lambda: 1.0 })).unwrap();
    let ranked = model.rerank("new-a", &["zzz", "D", "B", "yyy", "B"]);
    let ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["B", "D", "zzz", "yyy"]);
    assert!(ranked[0].1.unwrap() > ranked[1].1.unwrap());
    assert_eq!((ranked[2].1, ranked[3].1), (None, None));
    // An unknown user's list is ordered by popularity.
    let ranked = model.rerank("stranger", &["A", "C", "nope"]);
    let ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["C", "A", "nope"]);
    assert!(model.rerank("new-a", &[]).is_empty());
}

/// Every user's full ranking with scores, seen items included.
fn all_scores(model: &Model) -> Vec<Vec<(String, f32)>> {
    let users = ["ab-0", "ab-4", "cd-1", "cd-7", "c-2", "new-a", "stranger"];
    users.iter().map(|u| model.recommend(u, 10, &QueryOptions::default().include_seen()).items).collect()
}

#[test]
fn same_seed_same_model_different_seed_different_factors() {
    let config = TrainConfig { ials: small_ials(), ease_lambdas: vec![1.0], ..TrainConfig::default() };
    let a = train(took_a_took_b(), &config).unwrap();
    let mut shuffled = took_a_took_b();
    shuffled.reverse();
    let b = train(shuffled, &config).unwrap();
    // Same data in another order, same seed: the same choice and exactly the same scores.
    assert_eq!(a.info().selection.candidates.len(), b.info().selection.candidates.len());
    for (x, y) in a.info().selection.candidates.iter().zip(&b.info().selection.candidates) {
        assert_eq!((&x.spec, x.ndcg_at_10, x.recall_at_20), (&y.spec, y.ndcg_at_10, y.recall_at_20));
    }
    assert_eq!(all_scores(&a), all_scores(&b));
    assert_eq!(a.info().version, b.info().version);

    let ials = forced(ModelSpec::Ials(small_ials()));
    let c = train(took_a_took_b(), &ials).unwrap();
    let d = train(took_a_took_b(), &TrainConfig { seed: 43, ..ials }).unwrap();
    assert_ne!(all_scores(&c), all_scores(&d), "another seed starts iALS elsewhere");
    assert_eq!(c.info().version, d.info().version, "the version names the data, not the seed");
}

#[test]
fn save_and_load_round_trip_every_model() {
    let dir = tempfile::tempdir().unwrap();
    for spec in every_model().into_iter().chain([ModelSpec::Popularity { half_life_days: Some(30.0) }]) {
        let model = train(took_a_took_b(), &forced(spec.clone())).unwrap();
        let path = dir.path().join(format!("{}.bin", spec.name()));
        model.save(&path).unwrap();
        let loaded = Model::load(&path).unwrap();
        assert_eq!(loaded, model, "{}", spec.name());
        for user in ["new-a", "cd-3", "stranger"] {
            let opts = QueryOptions::default();
            assert_eq!(loaded.recommend(user, 4, &opts), model.recommend(user, 4, &opts));
        }
        assert_eq!(Model::from_bytes(&model.to_bytes()).unwrap(), model);
    }
}

#[test]
fn corrupted_truncated_and_foreign_files_are_refused_with_the_reason() {
    let model = train(took_a_took_b(), &forced(ModelSpec::Ease { lambda: 1.0 })).unwrap();
    let bytes = model.to_bytes();

    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    assert!(matches!(Model::from_bytes(&flipped), Err(DecodeError::ChecksumMismatch { .. })));

    let truncated = &bytes[..bytes.len() - 10];
    let err = Model::from_bytes(truncated).unwrap_err();
    assert!(matches!(err, DecodeError::LengthMismatch { .. }), "{err}");
    assert!(err.to_string().contains("truncated"));

    assert!(matches!(Model::from_bytes(&bytes[..20]), Err(DecodeError::TooShort { len: 20 })));
    assert!(matches!(
        Model::from_bytes(b"USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nxxxxxxxxxxxxxxxxxxxxx"),
        Err(DecodeError::BadMagic)
    ));

    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&2u32.to_le_bytes());
    let err = Model::from_bytes(&future).unwrap_err();
    assert!(matches!(err, DecodeError::UnsupportedVersion { found: 2 }));
    assert_eq!(err.to_string(), "model format version 2 is not supported; this build reads version 1");

    // Through a file, the error names the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    std::fs::write(&path, &flipped).unwrap();
    let err = Model::load(&path).unwrap_err();
    assert!(matches!(err, ModelFileError::Invalid { source: DecodeError::ChecksumMismatch { .. }, .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("SHA-256"), "{message}");
}

fn model_trained_at(t: i64, extra: &[InteractionRow]) -> Model {
    let mut rows = took_a_took_b();
    rows.extend_from_slice(extra);
    train(
        rows,
        &TrainConfig { trained_at: Some(t), ..forced(ModelSpec::ItemKnn { neighbours: 10, shrink: 0.0 }) },
    )
    .unwrap()
}

#[tokio::test]
async fn registry_publishes_atomically_and_serves_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let registry = ModelRegistry::in_dir(&models);
    assert!(matches!(registry.load_latest().await, Err(RegistryError::NoModel(_))));
    assert_eq!(registry.latest().await.unwrap(), None);

    let first = model_trained_at(1_767_225_600, &[]);
    let v1 = registry.publish(&first).await.unwrap();
    assert_eq!(v1.as_str(), first.info().version);
    // Publishing the same model again is a no-op, not an error.
    assert_eq!(registry.publish(&first).await.unwrap(), v1);
    let second = model_trained_at(1_767_229_200, &[row("new-a", "B", 600)]);
    let v2 = registry.publish(&second).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(registry.versions().await.unwrap(), [v1.clone(), v2.clone()]);
    assert_eq!(registry.latest().await.unwrap(), Some(v2.clone()));
    let (latest, loaded) = registry.load_latest().await.unwrap();
    assert_eq!((latest, loaded), (v2.clone(), second));
    assert!(models.join(v2.as_str()).join("info.json").exists());
    // A model trained earlier but published later does not roll serving back...
    let late = model_trained_at(1_767_220_000, &[row("new-a", "D", 800)]);
    let v0 = registry.publish(&late).await.unwrap();
    assert!(v0 < v1);
    assert_eq!(registry.latest().await.unwrap(), Some(v2.clone()));
    // ...unless asked to.
    registry.point_latest_to(&v0).await.unwrap();
    assert_eq!(registry.load_latest().await.unwrap().0, v0);
    registry.point_latest_to(&v2).await.unwrap();
    // Nothing temporary is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_corrupted_new_version_is_refused_while_the_previous_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let registry = ModelRegistry::in_dir(dir.path());
    let v1 = registry.publish(&model_trained_at(1_767_225_600, &[])).await.unwrap();
    let (live, refused) = LiveModel::open(registry.clone()).await.unwrap();
    assert!(refused.is_empty());
    assert!(matches!(live.refresh().await.unwrap(), Refresh::Unchanged));

    // A newer version whose file got damaged after publishing (a partial copy, a bad disk).
    let v2 = registry.publish(&model_trained_at(1_767_229_200, &[row("new-a", "B", 600)])).await.unwrap();
    let path = dir.path().join(v2.as_str()).join("model.bin");
    assert_eq!(registry.model_location(&v2), path.display().to_string());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let err = live.refresh().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(v2.as_str()) && message.contains("truncated"), "{message}");
    assert_eq!(err.location(), Some(path.display().to_string().as_str()));
    assert_eq!(live.version(), v1);
    assert!(live.current().recommend("new-a", 1, &QueryOptions::default()).personalized);
    // The broken version is not re-read on every poll.
    assert!(matches!(live.refresh().await.unwrap(), Refresh::Unchanged));
    // A strict load of LATEST fails; a cold start falls back to the newest valid version.
    assert!(registry.load_latest().await.is_err());
    let (version, _, refused) = registry.load_newest_valid().await.unwrap();
    assert_eq!(version, v1);
    assert_eq!(refused.len(), 1);

    // The next good version is picked up without a restart.
    let v3 = registry.publish(&model_trained_at(1_767_232_800, &[row("new-a", "C", 700)])).await.unwrap();
    match live.refresh().await.unwrap() {
        Refresh::Swapped { from, to } => assert_eq!((from, to), (v1, v3.clone())),
        other => panic!("expected a swap, got {other:?}"),
    }
    assert_eq!(live.version(), v3);
}

#[test]
fn dense_models_respect_the_memory_budget() {
    let tiny = 16; // bytes: less than EASE needs for 6 items (24 × 36 = 864)
    let config = TrainConfig { memory_budget_bytes: tiny, ..forced(ModelSpec::Ease { lambda: 1.0 }) };
    let err = train(took_a_took_b(), &config).unwrap_err();
    assert!(matches!(err, TrainError::OverMemoryBudget { model: "ease", items: 6, .. }), "{err}");

    let auto = TrainConfig { memory_budget_bytes: tiny, ials: small_ials(), ..TrainConfig::default() };
    let model = train(took_a_took_b(), &auto).unwrap();
    let selection = &model.info().selection;
    assert!(selection.candidates.iter().all(|c| !c.spec.is_dense()));
    // Dense EASE and its blend, then sparse EASE, whose co-occurrences do not fit 16 bytes either.
    assert_eq!(selection.skipped.len(), 2, "{:?}", selection.skipped);
    assert!(selection.skipped[0].contains("budget"));
    assert!(selection.skipped[1].starts_with("sparse-ease") && selection.skipped[1].contains("budget"));
}

#[test]
fn csv_rows_stream_and_a_broken_row_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interactions.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE").unwrap();
    writeln!(f, "s1,math-101,1767225600,enrolled,").unwrap();
    writeln!(f, "s1,art-7,1767225601,submitAssignment,0.5").unwrap();
    writeln!(f, "s2,math-101,yesterday,enrolled,").unwrap();
    drop(f);
    let rows: Vec<_> = read_csv(&path).unwrap().collect();
    assert_eq!(rows.len(), 3);
    let second = rows[1].as_ref().unwrap();
    assert_eq!((second.event_type.as_str(), second.event_value), ("submitAssignment", Some(0.5)));
    assert_eq!(rows[0].as_ref().unwrap().event_value, None);
    let err = rows[2].as_ref().unwrap_err();
    assert!(matches!(err, InputError::CsvRow { line: 4, .. }), "{err}");
    assert!(err.to_string().contains("line 4") && err.to_string().contains("TIMESTAMP"), "{err}");
    // Training stops at the broken row with the same error.
    let err = try_train(read_csv(&path).unwrap(), &TrainConfig::default()).unwrap_err();
    assert!(matches!(err, TrainError::Input(InputError::CsvRow { line: 4, .. })), "{err}");

    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\ns1,a,1767225600,enrolled\ns1,b\n")
        .unwrap();
    let err = read_csv(&ragged).unwrap().nth(1).unwrap().unwrap_err();
    assert!(err.to_string().contains("line 3") && err.to_string().contains("2 fields"), "{err}");

    let wrong = dir.path().join("wrong.csv");
    std::fs::write(&wrong, "user,item\n").unwrap();
    assert!(matches!(read_csv(&wrong), Err(InputError::Header { .. })));
    assert!(matches!(read_csv(dir.path().join("missing.csv")), Err(InputError::Open { .. })));
}

#[test]
fn event_weights_and_the_value_threshold_shape_the_training_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interactions.csv");
    std::fs::write(
        &path,
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n\
         s1,a,1767225600,enrolled,\n\
         s1,b,1767225601,viewed,\n\
         s2,a,1767225602,enrolled,0.1\n\
         s2,c,1767225603,enrolled,0.9\n",
    )
    .unwrap();
    let config = TrainConfig {
        event_weights: [("enrolled".to_string(), 1.0), ("viewed".to_string(), 0.0)].into(),
        min_event_value: Some(0.5),
        ..forced(ModelSpec::Popularity { half_life_days: None })
    };
    let model = try_train(read_csv(&path).unwrap(), &config).unwrap();
    // "viewed" weighs nothing and s2's low-value enrolment is below the threshold.
    assert_eq!(model.history("s1"), ["a"]);
    assert_eq!(model.history("s2"), ["c"]);
    assert_eq!(model.info().rows, 4);
    assert_eq!(model.info().interactions, 2);
}

#[test]
fn parquet_export_rows_are_read() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    let batch = RecordBatch::try_from_iter([
        ("USER_ID", Arc::new(StringArray::from(vec!["s1", "s2"])) as ArrayRef),
        ("ITEM_ID", Arc::new(StringArray::from(vec!["math-101", "art-7"])) as ArrayRef),
        ("TIMESTAMP", Arc::new(Int64Array::from(vec![1_767_225_600, 1_767_225_601])) as ArrayRef),
        ("EVENT_TYPE", Arc::new(StringArray::from(vec!["enrolled", "submitAssignment"])) as ArrayRef),
        ("EVENT_VALUE", Arc::new(Float32Array::from(vec![None, Some(2.5)])) as ArrayRef),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interactions.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let rows: Vec<InteractionRow> = read_parquet(&path).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], InteractionRow { event_value: None, ..row("s1", "math-101", 0) });
    assert_eq!(rows[1].event_type, "submitAssignment");
    assert_eq!(rows[1].event_value, Some(2.5));

    std::fs::write(dir.path().join("bad.parquet"), b"not parquet").unwrap();
    let err = read_parquet(dir.path().join("bad.parquet")).err().unwrap();
    assert!(err.to_string().contains("bad.parquet"), "{err}");
}

#[test]
fn models_and_the_live_handle_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
    shareable::<LiveModel>();
    shareable::<ModelRegistry>();
}

#[tokio::test]
async fn candidates_wait_outside_the_live_versions_until_promoted_and_a_rollback_points_back() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    // The layout the pipeline and the API share: models/ and model-candidates/ in one store.
    let registry = ModelRegistry::new(Arc::new(artifacts::DirectoryStore::new(dir.path())));
    let first = model_trained_at(1_767_225_600, &[]);
    let v1 = registry.store_candidate(&first).await.unwrap();
    assert!(registry.live().await.unwrap().is_none(), "a candidate is not live");
    assert!(dir.path().join("model-candidates").join(v1.as_str()).join("model.bin").exists());
    registry.promote(&v1).await.unwrap();
    let (live, info) = registry.live().await.unwrap().unwrap();
    assert_eq!((live, info.version.as_str()), (v1.clone(), v1.as_str()));
    assert!(dir.path().join("models").join(v1.as_str()).join("info.json").exists());

    let v2 =
        registry.store_candidate(&model_trained_at(1_767_229_200, &[row("new-a", "B", 600)])).await.unwrap();
    registry.promote(&v2).await.unwrap();
    assert_eq!(registry.latest().await.unwrap(), Some(v2));
    // A rollback to a version published before.
    registry.promote(&v1).await.unwrap();
    assert_eq!(registry.latest().await.unwrap(), Some(v1));
    let unknown = recommender::Version::parse("20000101T000000Z-000000000000").unwrap();
    assert!(matches!(registry.promote(&unknown).await, Err(RegistryError::UnknownVersion(_))));
    assert!(matches!(registry.load_candidate(&unknown).await, Ok(None)));
}
