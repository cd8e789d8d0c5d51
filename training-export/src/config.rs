//! Configuration: from the environment (or flags), read once at start, validated with
//! a message that says what to set. An AWS adapter is chosen when its resource
//! variable is set; otherwise the embedded default under `DATA_DIR` is used.

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::PersonalizeSettings;
use crate::personalize::PersonalizeResources;
#[cfg(feature = "test-hooks")]
use crate::pipeline::CONVERTING;
use crate::pipeline::Settings;
#[cfg(feature = "test-hooks")]
use crate::run::RunState;
use crate::run::TrainingMode;

/// The longest `PERSONALIZE_NAME_PREFIX`: `<prefix>-import-<runId>` must fit Personalize's
/// 63-character names.
pub const MAX_NAME_PREFIX: usize = 30;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Local data: embedded store, runs, exports, models, pipeline events.
    #[arg(long, env = "DATA_DIR", default_value = store::embedded::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// DynamoDB interactions table. Unset: the embedded store in DATA_DIR.
    #[arg(long, env = "INTERACTIONS_TABLE")]
    pub interactions_table: Option<String>,
    /// S3 bucket for exports and model versions. Unset: DATA_DIR.
    #[arg(long, env = "DATA_BUCKET")]
    pub data_bucket: Option<String>,
    /// DynamoDB table of pipeline runs (keys pk, sk). Unset: the embedded store.
    #[arg(long, env = "RUNS_TABLE")]
    pub runs_table: Option<String>,
    /// EventBridge bus for `ranking.pipeline` events. Unset: DATA_DIR/pipeline-events.jsonl.
    #[arg(long, env = "EVENT_BUS_NAME")]
    pub event_bus_name: Option<String>,
    /// Parallel Scan segments read at once.
    #[arg(long, env = "SCAN_SEGMENTS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub scan_segments: u32,
    /// Export the table with DynamoDB's own export (`ExportTableToPointInTime`, converted file
    /// by file over as many invocations as it takes) when `DescribeTable` reports at least
    /// this many bytes: `0` always, `off` never. Default: 1 GiB (about what one invocation
    /// scans in its 15 minutes, see BENCHMARKS.md) for a DynamoDB table; the embedded store
    /// scans unless this is set.
    #[arg(long, env = "TABLE_EXPORT_ABOVE_BYTES", value_parser = parse_threshold)]
    pub table_export_above_bytes: Option<u64>,
    /// Invocations a step may take without moving the run on (a retryable failure, a
    /// timeout, a crash) before the run ends `Failed` and the invocation reports an error.
    #[arg(long, env = "STEP_MAX_ATTEMPTS", default_value_t = crate::pipeline::DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub step_max_attempts: u32,
    /// A run older than this many hours ends `Failed` at its next invocation.
    #[arg(long, env = "RUN_MAX_AGE_HOURS", default_value_t = crate::pipeline::DEFAULT_MAX_RUN_AGE_HOURS,
          value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    pub run_max_age_hours: u64,
    /// S3 multipart part size in MiB (5 to 512): memory per file being uploaded.
    #[arg(long, env = "PART_SIZE_MIB", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(5..=512))]
    pub part_size_mib: u32,
    #[arg(long, env = "PERSONALIZE_DATASET_GROUP_ARN")]
    pub personalize_dataset_group_arn: Option<String>,
    #[arg(long, env = "PERSONALIZE_INTERACTIONS_DATASET_ARN")]
    pub personalize_interactions_dataset_arn: Option<String>,
    #[arg(long, env = "PERSONALIZE_SOLUTION_ARN")]
    pub personalize_solution_arn: Option<String>,
    #[arg(long, env = "PERSONALIZE_CAMPAIGN_ARN")]
    pub personalize_campaign_arn: Option<String>,
    /// Role Personalize assumes to read the export from the bucket.
    #[arg(long, env = "PERSONALIZE_IMPORT_ROLE_ARN")]
    pub personalize_import_role_arn: Option<String>,
    /// Prefix of import job and solution version names.
    #[arg(long, env = "PERSONALIZE_NAME_PREFIX", default_value = "ranking")]
    pub personalize_name_prefix: String,
    /// FULL, or UPDATE (User-Personalization only; a FULL still runs every FULL_TRAINING_EVERY_DAYS).
    #[arg(long, env = "TRAINING_MODE", value_enum, default_value = "FULL")]
    pub training_mode: TrainingMode,
    #[arg(long, env = "FULL_TRAINING_EVERY_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    pub full_training_every_days: u32,
    /// Higher-is-better offline metric compared by the quality gate.
    #[arg(long, env = "QUALITY_METRIC", default_value = "normalized_discounted_cumulative_gain_at_10")]
    pub quality_metric: String,
    /// How much worse than the live version a new one may be: 0.02 = 2 %.
    #[arg(long, env = "QUALITY_TOLERANCE", default_value_t = 0.02, value_parser = parse_tolerance)]
    pub quality_tolerance: f64,
    /// No step starts with less than this many seconds left before the Lambda deadline.
    #[arg(long, env = "SAFETY_MARGIN_SECS", default_value_t = 60)]
    pub safety_margin_secs: u64,
    /// Set by Lambda: the function's MemorySize in MiB, from which the embedded trainer's memory
    /// budget follows (`embedded_model::memory_budget_bytes`).
    #[arg(long, env = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", hide = true)]
    pub function_memory_mib: Option<u64>,
    /// Fault injection for the end-to-end tests (`tests/e2e`): abort the process right after a
    /// run is saved in this state (`Exporting` ... `Done`), as a crash there would, or (with
    /// `Converting`) in the middle of converting a table export's file. Refused
    /// inside Lambda. Only builds with the `test-hooks` feature have it: the others do not
    /// read the variable at all.
    #[cfg(feature = "test-hooks")]
    #[arg(long, env = "TRAINING_EXPORT_CRASH_AFTER", hide = true, value_parser = parse_crash_state)]
    pub crash_after: Option<&'static str>,
}

#[cfg(feature = "test-hooks")]
fn parse_crash_state(raw: &str) -> Result<&'static str, String> {
    let names = || RunState::NAMES.into_iter().chain([CONVERTING]);
    names().find(|name| *name == raw).ok_or_else(|| {
        format!("{raw:?} is not a run state; one of {}", names().collect::<Vec<_>>().join(", "))
    })
}

/// The threshold a DynamoDB table gets when `TABLE_EXPORT_ABOVE_BYTES` is unset.
pub const DEFAULT_TABLE_EXPORT_ABOVE_BYTES: u64 = 1 << 30;

fn parse_threshold(raw: &str) -> Result<u64, String> {
    match raw {
        "off" => Ok(u64::MAX),
        _ => raw.parse().map_err(|_| format!("{raw:?} is neither a number of bytes nor `off`")),
    }
}

fn parse_tolerance(raw: &str) -> Result<f64, String> {
    let v: f64 = raw.parse().map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not in [0, 1)")) }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The pipeline over the embedded adapters in `data_dir`, every other setting at its
    /// default whatever the environment says: the ranking API's first run on a laptop, whose
    /// environment configures the API, not this pipeline.
    pub fn embedded(data_dir: &std::path::Path) -> Self {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("training-export")).mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from([
                std::ffi::OsStr::new("training-export"),
                "--data-dir".as_ref(),
                data_dir.as_os_str(),
            ])
            .expect("the defaults parse");
        Self::from_arg_matches(&matches).expect("the defaults parse")
    }

    /// The Personalize resources, if configured: all five variables or none.
    pub fn personalize(&self) -> Result<Option<PersonalizeResources>, ConfigError> {
        let vars = [
            ("PERSONALIZE_DATASET_GROUP_ARN", &self.personalize_dataset_group_arn),
            ("PERSONALIZE_INTERACTIONS_DATASET_ARN", &self.personalize_interactions_dataset_arn),
            ("PERSONALIZE_SOLUTION_ARN", &self.personalize_solution_arn),
            ("PERSONALIZE_CAMPAIGN_ARN", &self.personalize_campaign_arn),
            ("PERSONALIZE_IMPORT_ROLE_ARN", &self.personalize_import_role_arn),
        ];
        let missing: Vec<&str> = vars.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
        if missing.len() == vars.len() {
            return Ok(None);
        }
        if !missing.is_empty() {
            return Err(ConfigError(format!(
                "Personalize is partly configured; also set {} (or unset all PERSONALIZE_* to train the embedded model)",
                missing.join(", ")
            )));
        }
        let get = |v: &Option<String>| v.clone().expect("checked above");
        Ok(Some(PersonalizeResources {
            dataset_group_arn: get(&self.personalize_dataset_group_arn),
            interactions_dataset_arn: get(&self.personalize_interactions_dataset_arn),
            solution_arn: get(&self.personalize_solution_arn),
            campaign_arn: get(&self.personalize_campaign_arn),
            import_role_arn: get(&self.personalize_import_role_arn),
        }))
    }

    /// Checks everything that can be checked without calling AWS.
    pub fn validate(&self, in_lambda: bool) -> Result<(), ConfigError> {
        let personalize = self.personalize()?;
        if personalize.is_some() && self.data_bucket.is_none() {
            return Err(ConfigError("Personalize imports from S3: set DATA_BUCKET".into()));
        }
        if personalize.is_none() && self.training_mode == TrainingMode::Update {
            return Err(ConfigError("TRAINING_MODE=UPDATE needs Personalize (User-Personalization)".into()));
        }
        let prefix_ok = !self.personalize_name_prefix.is_empty()
            && self.personalize_name_prefix.len() <= MAX_NAME_PREFIX
            && self.personalize_name_prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .personalize_name_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(ConfigError(
                "PERSONALIZE_NAME_PREFIX must be 1 to 30 of [A-Za-z0-9-_], starting with a letter or digit"
                    .into(),
            ));
        }
        #[cfg(feature = "test-hooks")]
        if in_lambda && self.crash_after.is_some() {
            return Err(ConfigError(
                "TRAINING_EXPORT_CRASH_AFTER is a test hook that kills the process; unset it in Lambda"
                    .into(),
            ));
        }
        if in_lambda {
            let missing: Vec<&str> = [
                ("INTERACTIONS_TABLE", self.interactions_table.is_none()),
                ("DATA_BUCKET", self.data_bucket.is_none()),
                ("RUNS_TABLE", self.runs_table.is_none()),
                ("EVENT_BUS_NAME", self.event_bus_name.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, unset)| unset.then_some(name))
            .collect();
            if !missing.is_empty() {
                return Err(ConfigError(format!(
                    "in Lambda the local defaults do not persist; set {}",
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn settings(&self) -> Settings {
        Settings {
            scan_segments: self.scan_segments,
            quality_metric: self.quality_metric.clone(),
            quality_tolerance: self.quality_tolerance,
            safety_margin: Duration::from_secs(self.safety_margin_secs),
            table_export_above_bytes: self
                .table_export_above_bytes
                .or(self.interactions_table.is_some().then_some(DEFAULT_TABLE_EXPORT_ABOVE_BYTES)),
            max_attempts: self.step_max_attempts,
            max_run_age: Duration::from_secs(self.run_max_age_hours * 3600),
            #[cfg(feature = "test-hooks")]
            crash_after: self.crash_after,
            ..Settings::default()
        }
    }

    /// What the Personalize backend needs besides its resources.
    pub fn personalize_settings(&self) -> PersonalizeSettings {
        PersonalizeSettings {
            name_prefix: self.personalize_name_prefix.clone(),
            training_mode: self.training_mode,
            full_training_every_days: self.full_training_every_days,
        }
    }

    /// Whether any AWS service is configured (and so the SDK configuration is loaded).
    pub fn uses_aws(&self) -> bool {
        self.interactions_table.is_some()
            || self.data_bucket.is_some()
            || self.runs_table.is_some()
            || self.event_bus_name.is_some()
            || self.personalize_campaign_arn.is_some()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_job_name_fits_personalize() {
        let longest = super::MAX_NAME_PREFIX + "-import-".len() + crate::run::RUN_ID_LEN;
        assert!(longest <= 63, "{longest}");
    }

    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_embedded_pipeline_ignores_the_environment() {
        // The environment is set for a child run of this very test (setting it here would race
        // with the other tests' reading of it); the child checks, and says so.
        const NAME: &str = "config::tests::the_embedded_pipeline_ignores_the_environment";
        if std::env::var_os("EMBEDDED_CONFIG_CHILD").is_some() {
            assert_eq!(
                parse(&[]).unwrap().interactions_table.as_deref(),
                Some("interactions"),
                "env is read"
            );
            let c = Config::embedded(std::path::Path::new("/tmp/some data"));
            assert_eq!(c.data_dir, std::path::Path::new("/tmp/some data"));
            assert!(!c.uses_aws(), "{c:?}");
            assert_eq!(c.quality_tolerance, 0.02);
            assert_eq!(c.validate(false), Ok(()));
            println!("embedded config checked");
            return;
        }
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture"])
            .env("EMBEDDED_CONFIG_CHILD", "1")
            .env("INTERACTIONS_TABLE", "interactions")
            .env("QUALITY_TOLERANCE", "0.5")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "{out}{}", String::from_utf8_lossy(&child.stderr));
        assert!(out.contains("embedded config checked"), "the child ran no check: {out}");
    }

    #[test]
    fn defaults_are_local_and_valid() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./.data"));
        assert!(!c.uses_aws());
        assert_eq!(c.validate(false), Ok(()));
        let err = c.validate(true).unwrap_err().to_string();
        assert!(err.contains("INTERACTIONS_TABLE, DATA_BUCKET, RUNS_TABLE, EVENT_BUS_NAME"), "{err}");
    }

    #[test]
    fn bad_values_say_what_to_set() {
        assert!(parse(&["--quality-tolerance", "1.5"]).unwrap_err().contains("not in [0, 1)"));
        assert!(parse(&["--scan-segments", "0"]).is_err());
        assert!(parse(&["--training-mode", "partial"]).is_err());
        let partial = parse(&["--personalize-campaign-arn", "arn:c"]).unwrap();
        let err = partial.validate(false).unwrap_err().to_string();
        assert!(err.contains("also set PERSONALIZE_DATASET_GROUP_ARN"), "{err}");
        let update = parse(&["--training-mode", "UPDATE"]).unwrap();
        assert!(update.validate(false).unwrap_err().to_string().contains("needs Personalize"));
        let bad_prefix = parse(&["--personalize-name-prefix", "rank ing"]).unwrap();
        assert!(bad_prefix.validate(false).is_err());
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn the_crash_hook_names_a_state_and_stays_out_of_lambda() {
        assert_eq!(parse(&[]).unwrap().settings().crash_after, None, "off unless set");
        let err = parse(&["--crash-after", "Exprted"]).unwrap_err();
        assert!(err.contains("is not a run state; one of Exporting, Exported"), "{err}");
        let hooked = parse(&["--crash-after", "Trained"]).unwrap();
        assert_eq!(hooked.settings().crash_after, Some("Trained"));
        assert_eq!(hooked.validate(false), Ok(()));
        let mut in_lambda = hooked;
        in_lambda.interactions_table = Some("t".into());
        in_lambda.data_bucket = Some("b".into());
        in_lambda.runs_table = Some("r".into());
        in_lambda.event_bus_name = Some("e".into());
        let err = in_lambda.validate(true).unwrap_err().to_string();
        assert!(err.contains("TRAINING_EXPORT_CRASH_AFTER is a test hook"), "{err}");
    }

    #[test]
    fn personalize_needs_all_five_and_a_bucket() {
        let args = [
            "--personalize-dataset-group-arn",
            "g",
            "--personalize-interactions-dataset-arn",
            "d",
            "--personalize-solution-arn",
            "s",
            "--personalize-campaign-arn",
            "c",
            "--personalize-import-role-arn",
            "r",
        ];
        let c = parse(&args).unwrap();
        assert!(c.validate(false).unwrap_err().to_string().contains("set DATA_BUCKET"));
        let mut with_bucket = args.to_vec();
        with_bucket.extend(["--data-bucket", "b"]);
        let c = parse(&with_bucket).unwrap();
        assert_eq!(c.validate(false), Ok(()));
        assert_eq!(c.personalize().unwrap().unwrap().campaign_arn, "c");
    }
}
