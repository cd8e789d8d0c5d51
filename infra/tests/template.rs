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

fn names(v: &Value) -> BTreeSet<String> {
    template::referenced_names(v)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_send_uses_the_stacks_configuration_set_with_reputation_metrics_and_suppression() {
    let t = template::load();
    assert!(t["Parameters"].get("SesConfigurationSet").is_none(), "the old pass-through parameter is back");
    let cs = props(&t, "EmailConfigurationSet");
    assert_eq!(
        resource(&t, "EmailConfigurationSet").unwrap()["Type"].as_str(),
        Some("AWS::SES::ConfigurationSet")
    );
    assert_eq!(cs["ReputationOptions"]["ReputationMetricsEnabled"].as_bool(), Some(true));
    assert_eq!(cs["SendingOptions"]["SendingEnabled"].as_bool(), Some(true));
    let reasons: Vec<&str> = cs["SuppressionOptions"]["SuppressedReasons"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reasons, ["BOUNCE", "COMPLAINT"]);
    // The consumer is given it unconditionally.
    let vars = &props(&t, "EventConsumerFunction")["Environment"]["Variables"];
    match &vars["SES_CONFIGURATION_SET"] {
        Value::Tagged(tv) => assert_eq!(tv.tag, "Ref"),
        other => panic!("SES_CONFIGURATION_SET is not a plain !Ref: {other:?}"),
    }
    assert_eq!(names(&vars["SES_CONFIGURATION_SET"]), set(&["EmailConfigurationSet"]));
    // And the send grant names its ARN, outside any condition.
    let email = template::role_statements(&t, "EventConsumerRole")
        .into_iter()
        .find(|s| s.actions == ["ses:SendEmail"])
        .expect("a ses:SendEmail statement");
    let statement = props(&t, "EventConsumerRole")["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["Sid"].as_str() == Some("Email"))
        .unwrap()
        .clone();
    let unconditional: Vec<&Value> = statement["Resource"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|r| matches!(r, Value::Tagged(tv) if tv.tag == "Sub"))
        .collect();
    assert!(
        unconditional.iter().any(|r| names(r) == set(&["EmailConfigurationSet"])
            && format!("{r:?}").contains(":configuration-set/")),
        "{:?}",
        email.resources
    );
    assert_eq!(
        names(&statement["Condition"]["StringEquals"]["ses:FromAddress"]),
        set(&["EmailSender"]),
        "the sender condition is gone"
    );
}

#[test]
fn ses_events_go_to_the_default_bus_for_bounce_complaint_reject_delivery_and_delay() {
    let t = template::load();
    let d = props(&t, "EmailEventDestination");
    assert_eq!(names(&d["ConfigurationSetName"]), set(&["EmailConfigurationSet"]));
    let dest = &d["EventDestination"];
    assert_eq!(dest["Enabled"].as_bool(), Some(true));
    let mut types: Vec<String> = dest["MatchingEventTypes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_lowercase().replace('_', ""))
        .collect();
    types.sort();
    assert_eq!(types, ["bounce", "complaint", "delivery", "deliverydelay", "reject"]);
    let bus = format!("{:?}", dest["EventBridgeDestination"]["EventBusArn"]);
    assert!(bus.contains(":event-bus/default"), "SES publishes to the default bus only: {bus}");
}

#[test]
fn the_feedback_rule_takes_this_stacks_ses_events_to_the_consumer_with_retries() {
    let t = template::load();
    let rule = props(&t, "SesFeedbackRule");
    // The default bus: no EventBusName, or "default".
    assert!(rule.get("EventBusName").is_none_or(|b| b.as_str() == Some("default")), "{rule:?}");
    let pattern = &rule["EventPattern"];
    assert_eq!(pattern["source"].as_sequence().unwrap().len(), 1);
    assert_eq!(pattern["source"][0].as_str(), Some("aws.ses"));
    let detail_types: BTreeSet<&str> =
        pattern["detail-type"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(
        detail_types,
        BTreeSet::from([
            "Email Bounced",
            "Email Complaint Received",
            "Email Rejected",
            "Email Delivered",
            "Email Delivery Delayed"
        ])
    );
    let tag = &pattern["detail"]["mail"]["tags"]["ses:configuration-set"];
    assert_eq!(tag.as_sequence().map(Vec::len), Some(1), "one configuration set: {tag:?}");
    assert_eq!(names(tag), set(&["EmailConfigurationSet"]), "the rule would take other stacks' mail");
    let target = &rule["Targets"][0];
    assert_eq!(names(&target["Arn"]), set(&["EventConsumerFunction"]));
    assert!(target["RetryPolicy"]["MaximumRetryAttempts"].as_u64().unwrap() > 0);
    assert_eq!(names(&target["DeadLetterConfig"]["Arn"]), set(&["EventConsumerDeadLetterQueue"]));
}

#[test]
fn every_rule_targeting_the_consumer_has_a_permission_and_may_dead_letter() {
    let t = template::load();
    let consumer_rules: BTreeSet<String> = template::resources(&t)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Events::Rule"))
        .filter(|(_, r)| {
            r["Properties"]["Targets"]
                .as_sequence()
                .is_some_and(|ts| ts.iter().any(|x| names(&x["Arn"]).contains("EventConsumerFunction")))
        })
        .map(|(id, _)| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(consumer_rules.len(), 5, "{consumer_rules:?}");
    assert!(consumer_rules.contains("SesFeedbackRule"));
    let permitted: BTreeSet<String> = template::resources(&t)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Lambda::Permission"))
        .filter(|(_, r)| names(&r["Properties"]["FunctionName"]) == set(&["EventConsumerFunction"]))
        .filter(|(_, r)| r["Properties"]["Principal"].as_str() == Some("events.amazonaws.com"))
        .flat_map(|(_, r)| names(&r["Properties"]["SourceArn"]))
        .collect();
    assert_eq!(permitted, consumer_rules, "a rule without a permission, or a permission for no rule");
    let dlq = &props(&t, "EventConsumerDeadLetterQueuePolicy")["PolicyDocument"]["Statement"][0];
    let sources = names(&dlq["Condition"]["ArnEquals"]["aws:SourceArn"]);
    assert_eq!(sources, consumer_rules, "the dead-letter queue refuses some rule's undeliverable events");
}

#[test]
fn the_email_domain_identity_signs_with_dkim_and_a_custom_mail_from() {
    let t = template::load();
    let r = resource(&t, "EmailIdentity").unwrap();
    assert_eq!(r["Condition"].as_str(), Some("HasEmailDomain"));
    let p = &r["Properties"];
    assert_eq!(names(&p["EmailIdentity"]), set(&["EmailDomain"]));
    assert_eq!(p["DkimSigningAttributes"]["NextSigningKeyLength"].as_str(), Some("RSA_2048_BIT"));
    assert_eq!(names(&p["MailFromAttributes"]["MailFromDomain"]), set(&["MailFromSubdomain", "EmailDomain"]));
    assert_eq!(p["MailFromAttributes"]["BehaviorOnMxFailure"].as_str(), Some("USE_DEFAULT_VALUE"));
    assert_eq!(
        names(&p["ConfigurationSetAttributes"]["ConfigurationSetName"]),
        set(&["EmailConfigurationSet"])
    );
    let params = &t["Parameters"];
    assert_eq!(params["EmailDomain"]["Default"].as_str(), Some(""));
    assert_eq!(params["MailFromSubdomain"]["Default"].as_str(), Some("mail"));
    // The DNS records to publish, only when the stack owns the domain.
    let outputs = t["Outputs"].as_mapping().unwrap();
    let dns: Vec<(&str, &Value)> = outputs
        .iter()
        .filter(|(k, _)| {
            k.as_str().is_some_and(|k| {
                k.starts_with("EmailDkim") || k.starts_with("EmailMailFrom") || k == "EmailDmarcRecord"
            })
        })
        .map(|(k, v)| (k.as_str().unwrap(), v))
        .collect();
    assert_eq!(dns.len(), 6, "{dns:?}");
    for (id, o) in &dns {
        assert_eq!(o["Condition"].as_str(), Some("HasEmailDomain"), "{id}");
    }
    let text = |id: &str| format!("{:?}", outputs[id]["Value"]);
    for i in 1..=3 {
        let v = text(&format!("EmailDkimRecord{i}"));
        assert!(
            v.contains(&format!("EmailIdentity.DkimDNSTokenName{i}"))
                && v.contains(&format!("EmailIdentity.DkimDNSTokenValue{i}")),
            "{v}"
        );
    }
    assert!(text("EmailMailFromMxRecord").contains("10 feedback-smtp.${AWS::Region}.amazonses.com"));
    assert!(text("EmailMailFromSpfRecord").contains("v=spf1 include:amazonses.com ~all"));
    assert!(
        text("EmailDmarcRecord").contains("_dmarc.${EmailDomain}")
            && text("EmailDmarcRecord").contains("v=DMARC1; p=quarantine")
    );
}

#[test]
fn the_send_grant_names_each_identity_that_is_set_and_one_must_be() {
    let t = template::load();
    let statement = props(&t, "EventConsumerRole")["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["Sid"].as_str() == Some("Email"))
        .unwrap()
        .clone();
    let conditional: BTreeSet<(String, BTreeSet<String>)> = statement["Resource"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            Value::Tagged(tv) if tv.tag == "If" => {
                Some((tv.value[0].as_str().unwrap().to_owned(), names(&tv.value[1])))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        conditional,
        BTreeSet::from([
            ("HasEmailDomain".to_owned(), set(&["EmailIdentity"])),
            ("HasSesIdentity".to_owned(), set(&["SesIdentity"])),
        ])
    );
    let rule = format!("{:?}", t["Rules"]["EmailIdentityNamed"]["Assertions"][0]["Assert"]);
    assert!(rule.contains("EmailDomain") && rule.contains("SesIdentity"), "{rule}");
}

#[test]
fn reputation_alarms_fire_before_ses_reviews_the_account() {
    let t = template::load();
    for (id, metric, threshold) in [
        ("SesBounceRateAlarm", "Reputation.BounceRate", 0.05),
        ("SesComplaintRateAlarm", "Reputation.ComplaintRate", 0.001),
    ] {
        let p = props(&t, id);
        assert_eq!(p["Namespace"].as_str(), Some("AWS/SES"), "{id}");
        assert_eq!(p["MetricName"].as_str(), Some(metric), "{id}");
        assert!(p.get("Dimensions").is_none(), "{id}: account-level metrics have no dimensions");
        assert_eq!(p["Threshold"].as_f64(), Some(threshold), "{id}");
        assert_eq!(p["ComparisonOperator"].as_str(), Some("GreaterThanOrEqualToThreshold"), "{id}");
        assert_eq!(p["TreatMissingData"].as_str(), Some("notBreaching"), "{id}");
        assert_eq!(names(&p["AlarmActions"]), set(&["AlarmTopic"]), "{id}");
    }
}
