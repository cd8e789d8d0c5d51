//! `recommender evaluate` as a user runs it: a model over the memory budget is skipped with its
//! reason and the rest of the list still runs.

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
