//! `recommender evaluate` as a user runs it: a model over the memory budget is skipped with its
//! reason and the rest of the list still runs; both protocols write the split they evaluated on.

use std::process::Command;

/// 60 users × 8 items each out of 400: dense EASE needs about 3.7 MiB for 400 items.
fn interactions(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("interactions.csv");
    let mut csv = String::from("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\n");
    for user in 0..60u32 {
        for n in 0..8u32 {
            let item = (user * 7 + n * 13) % 400;
            csv.push_str(&format!("u-{user},i-{item},{},enrolled\n", 1_767_225_600 + n));
        }
    }
    std::fs::write(&path, csv).unwrap();
    path
}

fn evaluate(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = interactions(dir.path());
    Command::new(env!("CARGO_BIN_EXE_recommender"))
        .arg("evaluate")
        .arg("--interactions")
        .arg(&file)
        .args(args)
        .env_remove("RECOMMENDER_MEMORY_BUDGET_MB")
        .output()
        .unwrap()
}

#[test]
fn a_model_over_the_memory_budget_is_skipped_with_its_reason_and_the_rest_runs() {
    let out = evaluate(&["--json", "--memory-budget-mb", "1", "--models", "ease,item-knn,ials,auto"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let models: Vec<&str> = lines.iter().map(|l| l["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["ease", "item-knn", "ials", "auto"], "{stdout}");
    let skipped = lines[0]["skipped"].as_str().expect("ease is skipped");
    assert!(skipped.contains("over the memory budget of 1 MiB"), "{skipped}");
    for line in &lines[1..] {
        assert!(line.get("skipped").is_none() && line["ndcg@10"].as_f64().is_some(), "{line}");
    }
    assert_ne!(lines[3]["chosen"], "ease", "auto does not choose a model that does not fit");
}

#[test]
fn the_table_names_the_skipped_model_and_nothing_fitting_is_an_error() {
    let out = evaluate(&["--memory-budget-mb", "1", "--models", "ease,popularity"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("ease") && l.contains("skipped: ease needs about")),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("popularity ")), "{stdout}");

    let out = evaluate(&["--memory-budget-mb", "1", "--models", "ease"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model fits the memory budget"));
}

/// train.csv rows as (user, item, timestamp).
type TrainRows = Vec<(String, String, i64)>;

/// The split `--dump-split` wrote: train.csv and test.csv's (user, item) pairs.
fn dumped(dir: &std::path::Path) -> (TrainRows, Vec<(String, String)>) {
    let train = std::fs::read_to_string(dir.join("train.csv")).unwrap();
    let train = train
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].parse().unwrap())
        })
        .collect();
    let test = std::fs::read_to_string(dir.join("test.csv")).unwrap();
    let test = test
        .lines()
        .skip(1)
        .map(|l| {
            let (u, i) = l.split_once(',').unwrap();
            (u.to_owned(), i.to_owned())
        })
        .collect();
    (train, test)
}

#[test]
fn the_temporal_protocol_tests_on_each_users_latest_items_and_random_does_not() {
    let dir = tempfile::tempdir().unwrap();
    for protocol in ["temporal", "random"] {
        let split_dir = dir.path().join(protocol);
        let out = evaluate(&[
            "--json",
            "--protocol",
            protocol,
            "--models",
            "popularity",
            "--dump-split",
            split_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["users"], 60, "{line}");
        let (train, test) = dumped(&split_dir);
        // 8 items per user: 2 held out (round(1.6)), 6 trained on.
        assert_eq!((train.len(), test.len()), (360, 120), "{protocol}");
        // Each user's items carry times base+0..base+7: temporal holds out +6 and +7 exactly.
        let latest_trained = |user: &str| train.iter().filter(|r| r.0 == user).map(|r| r.2).max().unwrap();
        let all_latest = (0..60).all(|u| latest_trained(&format!("u-{u}")) == 1_767_225_600 + 5);
        assert_eq!(all_latest, protocol == "temporal", "{protocol}");
    }
    let out = evaluate(&["--protocol", "newest"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("random or temporal"));
}

#[test]
#[cfg(target_os = "linux")]
fn each_fit_reports_its_peak_memory() {
    // Dense EASE on 400 items holds 24 × 400² bytes (3.7 MiB) at its peak; popularity nearly nothing.
    let out = evaluate(&["--json", "--models", "popularity,ease"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let peaks: Vec<f64> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fit_peak_rss_mib"].as_f64().unwrap())
        .collect();
    assert!(peaks.iter().all(|&p| p > 1.0), "{stdout}");
    assert!(peaks[1] - peaks[0] > 3.0, "EASE's peak should exceed popularity's by its matrices: {stdout}");
}

#[test]
fn a_reader_that_closes_the_pipe_early_ends_the_program_quietly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = interactions(dir.path());
    // As `recommender evaluate … | head -1`: the first line is read, then the pipe is closed
    // while the other models still have lines to write.
    let mut child = Command::new(env!("CARGO_BIN_EXE_recommender"))
        .args(["evaluate", "--json", "--models", "popularity,item-knn,ials,ease,auto", "--interactions"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("\"popularity\""), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
