//! Each function's role allows exactly the AWS actions its code calls, on its own resources.
//!
//! Two links, each checked both ways:
//! 1. code -> `AWS_ACTIONS`: the SDK calls found in the sources a function runs in Lambda
//!    map to exactly the crate's `AWS_ACTIONS` list;
//! 2. `AWS_ACTIONS` -> template: the function's role grants exactly that list (plus the
//!    platform grants, each with its reason), no wildcard action, no foreign resource.

use infra::template::{self, check_function};
use infra::{FUNCTIONS, Function, action_drift, function_calls, scan, workspace_root};
use serde_yaml_ng::Value;

fn code_actions(f: &Function) -> &'static [&'static str] {
    match f.crate_name {
        "ranking-api" => ranking_api::AWS_ACTIONS,
        "event-consumer" => event_consumer::AWS_ACTIONS,
        "training-export" => training_export::AWS_ACTIONS,
        other => panic!("no AWS_ACTIONS known for {other}"),
    }
}

#[test]
fn aws_actions_lists_are_exactly_what_the_code_calls() {
    let problems: Vec<String> = FUNCTIONS
        .iter()
        .flat_map(|f| action_drift(f, code_actions(f)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_file_with_sdk_calls_is_accounted_for() {
    // A new adapter file (or a crate newly used) cannot escape the scan: each file with SDK
    // calls in a function's crate and its local dependencies is scanned or excluded with a reason.
    let root = workspace_root();
    let mut problems = Vec::new();
    for f in &FUNCTIONS {
        for dir in std::iter::once(f.crate_name).chain(f.local_deps.iter().copied()) {
            for file in scan::rust_files(&root.join(dir).join("src")) {
                let rel = file.strip_prefix(&root).unwrap().to_string_lossy().to_string();
                let calls = scan::sdk_calls_in(&std::fs::read_to_string(&file).unwrap())
                    .unwrap_or_else(|e| panic!("{rel}: {e}"));
                if calls.is_empty() {
                    continue;
                }
                let scanned =
                    f.sources.iter().any(|s| rel == s.path || rel.starts_with(&format!("{}/", s.path)));
                let excluded = f.not_in_lambda.iter().any(|(p, _)| *p == rel);
                if !(scanned || excluded) {
                    problems.push(format!(
                        "{}: {rel} calls {:?}; list it in the function's sources or, with the reason, in not_in_lambda",
                        f.crate_name,
                        calls.iter().map(|c| c.operation.as_str()).collect::<Vec<_>>()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_scan_finds_the_calls_we_know_of() {
    // Guards the scanner itself against finding nothing: a few calls that must be there.
    let calls: Vec<(String, String)> = FUNCTIONS
        .iter()
        .flat_map(|f| function_calls(f).unwrap())
        .map(|(_, c)| (c.service, c.operation))
        .collect();
    for (service, op) in [
        ("personalizeruntime", "get_recommendations"),
        ("s3", "get_object"),
        ("s3", "upload_part"),
        ("dynamodb", "transact_write_items"),
        ("dynamodb", "scan"),
        ("sesv2", "send_email"),
        ("lambda", "invoke"),
        ("personalize", "update_campaign"),
        ("eventbridge", "put_events"),
    ] {
        assert!(calls.iter().any(|(s, o)| s == service && o == op), "no {service}::{op} found in {calls:?}");
    }
}

#[test]
fn each_role_grants_exactly_the_code_actions_on_its_own_resources() {
    let t = template::load();
    let problems: Vec<String> =
        FUNCTIONS.iter().flat_map(|f| check_function(&t, f, code_actions(f))).collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn no_allow_anywhere_has_a_wildcard_action() {
    let t = template::load();
    let wild: Vec<String> = template::all_statements(&t)
        .into_iter()
        .filter(|(_, s)| s.effect == "Allow")
        .flat_map(|(id, s)| {
            s.actions.into_iter().filter(|a| template::is_wildcard(a)).map(move |a| format!("{id}: {a}"))
        })
        .collect();
    assert!(wild.is_empty(), "wildcard actions: {wild:?}");
    assert!(template::all_statements(&t).len() >= 10, "the statements were not found");
}

fn add_action(t: &mut Value, role: &str, action: &str) {
    let stmt =
        template::resource_mut(t, role).unwrap()["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap();
    let mut extra = stmt[0].clone();
    extra["Action"] = Value::Sequence(vec![Value::String(action.into())]);
    stmt.push(extra);
}

#[test]
fn a_wrong_grant_is_caught() {
    let clean = template::load();
    let f = &FUNCTIONS[0];
    assert_eq!(check_function(&clean, f, code_actions(f)), Vec::<String>::new());

    // Granted but not used.
    let mut t = clean.clone();
    add_action(&mut t, f.role_id, "s3:PutObject");
    let problems = check_function(&t, f, code_actions(f));
    assert!(
        problems.iter().any(|p| p.contains("s3:PutObject is granted but ranking-api never calls it")),
        "{problems:?}"
    );

    // Used but not granted: the code's list grows (a new call) without the template following.
    let mut more = code_actions(f).to_vec();
    more.push("personalize:DescribeCampaign");
    let problems = check_function(&clean, f, &more);
    assert!(
        problems.iter().any(|p| p.contains("calls personalize:DescribeCampaign but it is not granted")),
        "{problems:?}"
    );

    // A wildcard action.
    let mut t = clean.clone();
    add_action(&mut t, f.role_id, "s3:*");
    let problems = check_function(&t, f, code_actions(f));
    assert!(problems.iter().any(|p| p.contains("wildcard action \"s3:*\"")), "{problems:?}");

    // A resource that is not the function's own: "*" and another function's table.
    for foreign in
        [Value::String("*".into()), serde_yaml_ng::from_str("!GetAtt PipelineRunsTable.Arn").unwrap()]
    {
        let mut t = clean.clone();
        let stmt = &mut template::resource_mut(&mut t, f.role_id).unwrap()["Properties"]["Policies"][0]["PolicyDocument"]
            ["Statement"][0];
        stmt["Resource"] = foreign.clone();
        let problems = check_function(&t, f, code_actions(f));
        assert!(problems.iter().any(|p| p.contains("resource")), "{foreign:?} not caught: {problems:?}");
    }

    // The function swapped to another role.
    let mut t = clean.clone();
    template::resource_mut(&mut t, f.function_id).unwrap()["Properties"]["Role"] =
        serde_yaml_ng::from_str("!GetAtt TrainingExportRole.Arn").unwrap();
    assert!(check_function(&t, f, code_actions(f)).iter().any(|p| p.contains("does not use the role")));
}

#[test]
fn a_drifted_aws_actions_list_is_caught() {
    let f = &FUNCTIONS[0];
    // An action the code calls, missing from the list.
    let missing: Vec<&str> =
        code_actions(f).iter().copied().filter(|a| *a != "personalize:GetPersonalizedRanking").collect();
    let problems = action_drift(f, &missing).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("calls personalize:GetPersonalizedRanking") && p.contains("personalize.rs")),
        "{problems:?}"
    );
    // An action listed that no call needs (ranking-api never writes objects).
    let mut extra = code_actions(f).to_vec();
    extra.push("s3:PutObject");
    let problems = action_drift(f, &extra).unwrap();
    assert_eq!(
        problems,
        ["ranking-api: AWS_ACTIONS lists s3:PutObject but no SDK call in its sources needs it"]
    );
}

#[test]
fn only_an_action_without_a_resource_type_may_have_a_star_resource() {
    let f = FUNCTIONS.iter().find(|f| f.crate_name == "event-consumer").unwrap();
    assert!(f.no_resource_type.iter().any(|g| g.action == "ses:PutSuppressedDestination"));
    let mut calls = code_actions(f).to_vec();
    if !calls.contains(&"ses:PutSuppressedDestination") {
        calls.push("ses:PutSuppressedDestination");
    }
    let clean = template::load();
    assert_eq!(check_function(&clean, f, &calls), Vec::<String>::new());
    fn statements<'a>(t: &'a mut Value, role: &str) -> &'a mut Vec<Value> {
        template::resource_mut(t, role).unwrap()["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap()
    }
    let index = |t: &mut Value, sid: &str| {
        statements(t, f.role_id).iter().position(|s| s["Sid"].as_str() == Some(sid)).unwrap()
    };

    // '*' on an action that has a resource type is still foreign.
    let mut t = clean.clone();
    let i = index(&mut t, "Email");
    statements(&mut t, f.role_id)[i]["Resource"] = Value::String("*".into());
    assert!(check_function(&t, f, &calls).iter().any(|p| p.contains("literal resource")), "'*' on SendEmail");

    // Mixed into another statement, it would give that action '*' too.
    let mut t = clean.clone();
    let i = index(&mut t, "Suppression");
    statements(&mut t, f.role_id)[i]["Action"] =
        serde_yaml_ng::from_str("[ses:PutSuppressedDestination, ses:SendEmail]").unwrap();
    assert!(check_function(&t, f, &calls).iter().any(|p| p.contains("mixes actions")));

    // Scoped to something else, it would not be granted at all.
    let mut t = clean.clone();
    let i = index(&mut t, "Suppression");
    statements(&mut t, f.role_id)[i]["Resource"] =
        serde_yaml_ng::from_str("!GetAtt IdempotencyTable.Arn").unwrap();
    assert!(check_function(&t, f, &calls).iter().any(|p| p.contains("must be exactly '*'")));
}
