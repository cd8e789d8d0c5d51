//! The template against the code: Personalize schemas, environment variables, schedules,
//! event rules.

use std::collections::BTreeSet;

use infra::template::{self, resource};
use infra::{FUNCTIONS, scan, workspace_root};
use serde_yaml_ng::Value;

fn props<'a>(t: &'a Value, id: &str) -> &'a Value {
    resource(t, id).and_then(|r| r.get("Properties")).unwrap_or_else(|| panic!("no resource {id}"))
}

#[test]
fn personalize_schemas_in_the_template_equal_the_files() {
    let t = template::load();
    for (id, file) in [
        ("InteractionsSchema", "interactions.json"),
        ("UsersSchema", "users.json"),
        ("ItemsSchema", "items.json"),
    ] {
        let inline =
            props(&t, id)["Schema"].as_str().unwrap_or_else(|| panic!("{id}: Schema is not a string"));
        let inline: serde_json::Value = serde_json::from_str(inline)
            .unwrap_or_else(|e| panic!("{id}: the inline schema is not JSON: {e}"));
        let path = workspace_root().join("schemas/personalize").join(file);
        let on_disk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            inline,
            on_disk,
            "{id} differs from {}: copy the file's JSON into the template",
            path.display()
        );
    }
}

#[test]
fn a_drifted_schema_would_not_be_equal() {
    // The comparison above is on parsed JSON: formatting differences pass, a changed field does not.
    let file: serde_json::Value = serde_json::from_str(schemas::personalize::INTERACTIONS_SCHEMA).unwrap();
    let t = template::load();
    let inline =
        props(&t, "InteractionsSchema")["Schema"].as_str().unwrap().replace("\"float\"", "\"double\"");
    assert_ne!(serde_json::from_str::<serde_json::Value>(&inline).unwrap(), file);
}

/// The `env = "NAME"` declarations in a crate's sources: the variables its code reads.
fn env_vars_read_by(crate_dir: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in scan::rust_files(&workspace_root().join(crate_dir).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for piece in text.split("env = \"").skip(1) {
            if let Some(name) = piece.split('"').next() {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_environment_variable_in_the_template_is_one_the_code_reads() {
    let t = template::load();
    for f in &FUNCTIONS {
        let read = env_vars_read_by(f.crate_name);
        assert!(read.len() >= 5, "{}: found only {read:?}", f.crate_name);
        let set = template::environment(&t, f.function_id);
        let unknown: Vec<&String> = set.difference(&read).collect();
        assert!(
            unknown.is_empty(),
            "{}: the template sets {unknown:?}, which the code never reads",
            f.function_id
        );
    }
}

#[test]
fn lambda_gets_what_each_function_requires_there() {
    let t = template::load();
    let required: [(&str, &[&str]); 3] = [
        (
            "RankingApiFunction",
            &["DATA_BUCKET", "PERSONALIZE_CAMPAIGN_ARN", "PERSONALIZE_RANKING_CAMPAIGN_ARN"],
        ),
        (
            "EventConsumerFunction",
            &[
                "INTERACTIONS_TABLE",
                "IDEMPOTENCY_TABLE",
                "MAIL_TRANSPORT",
                "EMAIL_SENDER",
                "TRAINING_EXPORT_FUNCTION",
            ],
        ),
        (
            "TrainingExportFunction",
            &[
                "INTERACTIONS_TABLE",
                "DATA_BUCKET",
                "RUNS_TABLE",
                "EVENT_BUS_NAME",
                "PERSONALIZE_DATASET_GROUP_ARN",
                "PERSONALIZE_INTERACTIONS_DATASET_ARN",
                "PERSONALIZE_SOLUTION_ARN",
                "PERSONALIZE_CAMPAIGN_ARN",
                "PERSONALIZE_IMPORT_ROLE_ARN",
            ],
        ),
    ];
    for (id, names) in required {
        let set = template::environment(&t, id);
        for name in names {
            assert!(set.contains(*name), "{id} lacks {name}");
        }
    }
    let vars = &props(&t, "EventConsumerFunction")["Environment"]["Variables"];
    assert_eq!(vars["MAIL_TRANSPORT"].as_str(), Some("ses"), "an outbox in Lambda's /tmp reaches nobody");
}

#[test]
fn the_five_personalize_variables_of_training_export_are_set_together() {
    // The pipeline refuses a partial Personalize configuration: all five share one condition.
    let t = template::load();
    let vars = props(&t, "TrainingExportFunction")["Environment"]["Variables"].as_mapping().unwrap();
    let conditions: BTreeSet<String> = vars
        .iter()
        .filter(|(k, _)| {
            k.as_str().is_some_and(|k| k.starts_with("PERSONALIZE_") && k != "PERSONALIZE_NAME_PREFIX")
        })
        .map(|(_, v)| match v {
            Value::Tagged(tv) if tv.tag == "If" => tv.value[0].as_str().unwrap().to_owned(),
            other => panic!("a PERSONALIZE_* variable set unconditionally: {other:?}"),
        })
        .collect();
    assert_eq!(conditions, BTreeSet::from(["HasCampaign".to_owned()]));
}

#[test]
fn the_schedules_send_payloads_the_pipeline_accepts() {
    let t = template::load();
    let expected = [
        ("NightlyRunSchedule", "cron(0 2 * * ? *)", r#"{"action":"run","trigger":"schedule"}"#),
        ("AdvanceSchedule", "rate(10 minutes)", r#"{"action":"advance"}"#),
    ];
    for (id, expression, input) in expected {
        let p = props(&t, id);
        assert_eq!(p["ScheduleExpression"].as_str(), Some(expression), "{id}");
        let sent = p["Target"]["Input"].as_str().unwrap();
        assert_eq!(sent, input, "{id}");
        let request: training_export::pipeline::Request = serde_json::from_str(sent)
            .unwrap_or_else(|e| panic!("{id}: training-export refuses {sent}: {e}"));
        let expected_kind = if id == "AdvanceSchedule" { "Advance" } else { "Run" };
        assert!(format!("{request:?}").starts_with(expected_kind), "{id}: {request:?}");
        assert_eq!(
            template::referenced_names(&p["Target"]["Arn"]),
            BTreeSet::from(["TrainingExportFunction".to_owned()])
        );
    }
    let night = props(&t, "NightlyRunSchedule");
    assert_eq!(
        template::referenced_names(&night["ScheduleExpressionTimezone"]),
        BTreeSet::from(["ScheduleTimezone".into()])
    );
    let tz = &t["Parameters"]["ScheduleTimezone"]["Default"];
    assert_eq!(tz.as_str(), Some("Asia/Ho_Chi_Minh"));
}

#[test]
fn each_detail_type_the_consumer_handles_has_a_rule_with_retries_and_a_dead_letter_queue() {
    use schemas::events::DetailType;
    let t = template::load();
    let handled: Vec<DetailType> =
        DetailType::ALL.into_iter().filter(|d| *d != DetailType::RankingPipeline).collect();
    assert_eq!(handled.len(), 4);
    for d in handled {
        let rule = template::resources(&t)
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Events::Rule"))
            .find(|(_, r)| {
                r["Properties"]["EventPattern"]["detail-type"]
                    .as_sequence()
                    .is_some_and(|s| s.len() == 1 && s[0].as_str() == Some(d.as_str()))
            })
            .map(|(_, r)| &r["Properties"])
            .unwrap_or_else(|| panic!("no rule for {}", d.as_str()));
        assert_eq!(rule["EventPattern"]["source"][0].as_str(), Some(d.source()), "{}", d.as_str());
        assert_eq!(template::referenced_names(&rule["EventBusName"]), BTreeSet::from(["EventBus".into()]));
        let target = &rule["Targets"][0];
        assert_eq!(
            template::referenced_names(&target["Arn"]),
            BTreeSet::from(["EventConsumerFunction".into()])
        );
        assert!(target["RetryPolicy"]["MaximumRetryAttempts"].as_u64().unwrap() > 0);
        assert_eq!(
            template::referenced_names(&target["DeadLetterConfig"]["Arn"]),
            BTreeSet::from(["EventConsumerDeadLetterQueue".into()])
        );
    }
    assert_eq!(t["Parameters"]["EventBusName"]["Default"].as_str(), Some("student-event-bus"));
}

#[test]
fn functions_are_rust_on_al2023_with_json_logs_and_enough_memory() {
    let t = template::load();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(
        template::referenced_names(&globals["Architectures"]),
        BTreeSet::from(["Architecture".into()])
    );
    for f in &FUNCTIONS {
        let r = resource(&t, f.function_id).unwrap();
        assert_eq!(r["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"), "{}", f.function_id);
        let memory = r["Properties"]["MemorySize"].as_u64().or(globals["MemorySize"].as_u64()).unwrap();
        assert!(memory >= 512, "{}: {memory} MB", f.function_id);
        assert_eq!(r["Properties"]["LoggingConfig"]["LogFormat"].as_str(), Some("JSON"), "{}", f.function_id);
    }
}
