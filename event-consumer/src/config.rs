//! Configuration from the environment, read once at start and validated, and the
//! composition it selects: an AWS adapter for each port whose resource variable is
//! set, the embedded one under `DATA_DIR` otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_failure::config::AwsSetup;
use aws_failure::timeouts::Service;
use schemas::EmailAddress;
use store::dynamodb::DynamoInteractionStore;
use store::embedded::EmbeddedStore;
use store::{InteractionSink, StoreError};

use crate::consumer::{Consumer, EmailSettings};
use crate::ledger::dynamodb::DynamoLedger;
use crate::ledger::embedded::EmbeddedLedger;
use crate::ledger::{IdempotencyLedger, LedgerError};
use crate::mail::outbox::OutboxMailer;
use crate::mail::ses::SesMailer;
use crate::mail::{Language, Mailer};
use crate::retrain::{LambdaRetrainTrigger, LocalTrainingExport, RetrainNotConfigured, RetrainTrigger};
use crate::roster::Roster;
use crate::roster::dynamodb::DynamoRoster;
use crate::suppression::SuppressionList;

/// Sender of outbox mail when `EMAIL_SENDER` is not set.
pub const DEFAULT_OUTBOX_SENDER: &str = "no-reply@student-system.local";

/// Where the process runs; decided by `AWS_LAMBDA_RUNTIME_API`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Lambda,
    Local,
}

impl Runtime {
    pub fn detect() -> Self {
        if aws_failure::lambda::running_in_lambda() { Runtime::Lambda } else { Runtime::Local }
    }
}

/// How confirmation emails leave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MailTransport {
    /// Amazon SES v2 (needs EMAIL_SENDER, a verified identity).
    Ses,
    /// `.eml` files in `$DATA_DIR/outbox/`.
    #[default]
    Outbox,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerConfig {
    /// Folder of the local data: embedded store and ledger (`store.db`), outbox.
    #[arg(long, env = "DATA_DIR", default_value = store::embedded::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// DynamoDB table of interactions; the embedded store when unset.
    #[arg(long, env = "INTERACTIONS_TABLE")]
    pub interactions_table: Option<String>,
    /// DynamoDB table of the idempotency ledger; a table in `store.db` when unset.
    #[arg(long, env = "IDEMPOTENCY_TABLE")]
    pub idempotency_table: Option<String>,
    /// DynamoDB table of class rosters (students' addresses, for announcements); a table
    /// in `store.db` when unset.
    #[arg(long, env = "STUDENTS_TABLE")]
    pub students_table: Option<String>,
    /// Announcement emails a second at most: keep it below the account's SES sending
    /// rate (`aws sesv2 get-account`, SendQuota.MaxSendRate). 0 sends unpaced.
    #[arg(long, env = "EMAIL_SEND_RATE", default_value_t = crate::consumer::DEFAULT_SEND_RATE,
          value_parser = parse_rate)]
    pub email_send_rate: f64,
    /// Seconds one delivery spends on an announcement before the rest is left to a
    /// redelivery; keep it under the Lambda timeout.
    #[arg(long, env = "ANNOUNCEMENT_BUDGET_SECS",
          default_value_t = crate::consumer::DEFAULT_ANNOUNCEMENT_BUDGET.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=900))]
    pub announcement_budget_secs: u64,
    #[arg(long, env = "MAIL_TRANSPORT", value_enum, default_value_t)]
    pub mail_transport: MailTransport,
    /// From address of confirmation emails (required with ses).
    #[arg(long, env = "EMAIL_SENDER")]
    pub email_sender: Option<String>,
    #[arg(long, env = "EMAIL_LANGUAGE", value_enum, default_value_t)]
    pub email_language: Language,
    /// SES configuration set for bounce and complaint tracking (optional).
    #[arg(long, env = "SES_CONFIGURATION_SET")]
    pub ses_configuration_set: Option<String>,
    /// training-export Lambda started (asynchronously) by `ranking.requestUpdate`.
    #[arg(long, env = "TRAINING_EXPORT_FUNCTION")]
    pub training_export_function: Option<String>,
    /// Local training-export binary; defaults to the one next to this executable.
    #[arg(long, env = "TRAINING_EXPORT_BIN")]
    pub training_export_bin: Option<PathBuf>,
    /// How long a delivery's claim on an email or retrain lasts; keep it above the
    /// Lambda timeout.
    #[arg(long, env = "CLAIM_LEASE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub claim_lease_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("opening the embedded store: {0}")]
    Store(#[from] StoreError),
    #[error("opening the embedded ledger: {0}")]
    Ledger(#[from] LedgerError),
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && (0.0..=1000.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{raw:?} is not a rate between 0 and 1000 emails a second")),
    }
}

/// Treats `FOO=` like an unset variable: deployment templates often leave them empty.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ConsumerConfig {
    /// Reads the configuration from the environment alone (the Lambda's way).
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct EnvOnly {
            #[command(flatten)]
            config: ConsumerConfig,
        }
        <EnvOnly as clap::Parser>::try_parse_from(["event-consumer"]).map(|e| e.config)
    }

    /// The sender, checked: required for SES, defaulted for the outbox.
    pub fn sender(&self) -> Result<EmailAddress, ConfigError> {
        match (present(&self.email_sender), self.mail_transport) {
            (Some(raw), _) => EmailAddress::parse(raw)
                .map_err(|e| ConfigError::Invalid(format!("EMAIL_SENDER is not a usable address: {e}"))),
            (None, MailTransport::Ses) => Err(ConfigError::Invalid(
                "MAIL_TRANSPORT=ses needs EMAIL_SENDER, an address or domain verified in SES".into(),
            )),
            (None, MailTransport::Outbox) => {
                Ok(EmailAddress::parse(DEFAULT_OUTBOX_SENDER).expect("valid default"))
            }
        }
    }

    /// Everything that can be checked without touching a resource.
    pub fn validate(&self, runtime: Runtime) -> Result<(), ConfigError> {
        self.sender()?;
        if runtime == Runtime::Lambda {
            let mut missing = Vec::new();
            if present(&self.interactions_table).is_none() {
                missing
                    .push("INTERACTIONS_TABLE (the embedded store would live and die in the Lambda's /tmp)");
            }
            if present(&self.idempotency_table).is_none() {
                missing.push("IDEMPOTENCY_TABLE (every instance must see every claim, or emails repeat)");
            }
            if present(&self.students_table).is_none() {
                missing.push("STUDENTS_TABLE (announcements need every enrollment's roster entry)");
            }
            if self.mail_transport != MailTransport::Ses {
                missing.push("MAIL_TRANSPORT=ses (an outbox in /tmp reaches nobody)");
            }
            if !missing.is_empty() {
                return Err(ConfigError::Invalid(format!("in Lambda, set {}", missing.join("; "))));
            }
        }
        Ok(())
    }

    /// Which adapter serves each port. `describe` and `build` both read this one
    /// decision, so what the start-up log says is what runs.
    pub fn composition(&self, runtime: Runtime) -> Composition {
        let table = |t: &Option<String>| match present(t) {
            Some(t) => Storage::DynamoDb(t.to_owned()),
            None => Storage::Embedded(self.data_dir.join(store::embedded::FILE_NAME)),
        };
        Composition {
            interactions: table(&self.interactions_table),
            ledger: table(&self.idempotency_table),
            students: table(&self.students_table),
            mail: match self.mail_transport {
                MailTransport::Ses => MailChoice::Ses {
                    configuration_set: present(&self.ses_configuration_set).map(Into::into),
                },
                MailTransport::Outbox => {
                    MailChoice::Outbox(OutboxMailer::in_data_dir(&self.data_dir).dir().to_path_buf())
                }
            },
            language: self.email_language,
            retrain: match (present(&self.training_export_function), runtime) {
                (Some(f), _) => RetrainChoice::Lambda(f.to_owned()),
                (None, Runtime::Lambda) => RetrainChoice::NotConfigured,
                (None, Runtime::Local) => RetrainChoice::LocalBinary(self.training_export_bin.clone()),
            },
        }
    }

    /// One line per port saying which adapter serves it (no addresses).
    pub fn describe(&self, runtime: Runtime) -> Vec<String> {
        self.composition(runtime).describe()
    }

    /// Validates, then builds the consumer with the adapters this configuration selects.
    pub async fn build(&self, runtime: Runtime) -> Result<Consumer, ConfigError> {
        self.validate(runtime)?;
        let sender = self.sender()?;
        let composition = self.composition(runtime);
        // Every client's timeouts (overridable, see `aws_failure::timeouts`), read once here.
        let aws = match composition.needs_aws() {
            true => Some(AwsSetup::load().await.map_err(|e| ConfigError::Invalid(e.to_string()))?),
            false => None,
        };
        let aws_for = |service: Service| {
            aws.as_ref().expect("loaded whenever the composition has an AWS adapter").for_service(service)
        };

        let store: Arc<dyn InteractionSink> = match &composition.interactions {
            Storage::DynamoDb(table) => Arc::new(DynamoInteractionStore::new(
                aws_sdk_dynamodb::Client::new(&aws_for(Service::DynamoDb)),
                table,
            )),
            Storage::Embedded(_) => Arc::new(EmbeddedStore::open_in(&self.data_dir)?),
        };
        // The suppression list lives with the ledger (its table, its file); so does the
        // roster locally, while in AWS it has a table of its own.
        let mut embedded_ledger = None;
        let mut open_embedded = || -> Result<Arc<EmbeddedLedger>, ConfigError> {
            if embedded_ledger.is_none() {
                embedded_ledger = Some(Arc::new(EmbeddedLedger::open_in(&self.data_dir)?));
            }
            Ok(embedded_ledger.clone().expect("just opened"))
        };
        let (ledger, suppressions): (Arc<dyn IdempotencyLedger>, Arc<dyn SuppressionList>) =
            match &composition.ledger {
                Storage::DynamoDb(table) => {
                    let ledger = Arc::new(DynamoLedger::new(
                        aws_sdk_dynamodb::Client::new(&aws_for(Service::DynamoDb)),
                        table,
                    ));
                    (ledger.clone(), ledger)
                }
                Storage::Embedded(_) => {
                    let ledger = open_embedded()?;
                    (ledger.clone(), ledger)
                }
            };
        let roster: Arc<dyn Roster> = match &composition.students {
            Storage::DynamoDb(table) => {
                Arc::new(DynamoRoster::new(aws_sdk_dynamodb::Client::new(&aws_for(Service::DynamoDb)), table))
            }
            Storage::Embedded(_) => open_embedded()?,
        };
        let mailer: Arc<dyn Mailer> = match &composition.mail {
            MailChoice::Ses { configuration_set } => {
                // One attempt whatever the shared configuration says: see `SesMailer::new`.
                let ses = SesMailer::new(aws_sdk_sesv2::Client::new(&aws_for(Service::Ses)));
                match configuration_set {
                    Some(set) => Arc::new(ses.with_configuration_set(set)),
                    None => Arc::new(ses),
                }
            }
            MailChoice::Outbox(_) => Arc::new(OutboxMailer::in_data_dir(&self.data_dir)),
        };
        let retrain: Arc<dyn RetrainTrigger> = match &composition.retrain {
            RetrainChoice::Lambda(function) => Arc::new(LambdaRetrainTrigger::new(
                aws_sdk_lambda::Client::new(&aws_for(Service::Lambda)),
                function,
            )),
            RetrainChoice::NotConfigured => {
                tracing::warn!(
                    "TRAINING_EXPORT_FUNCTION is not set: ranking.requestUpdate events will be refused"
                );
                Arc::new(RetrainNotConfigured {
                    reason: "TRAINING_EXPORT_FUNCTION is not set on the event consumer".into(),
                })
            }
            RetrainChoice::LocalBinary(path) => Arc::new(match path {
                Some(path) => LocalTrainingExport::at(path),
                None => LocalTrainingExport::next_to_current_exe(),
            }),
        };
        Ok(Consumer::with_ports(
            store,
            mailer,
            ledger,
            suppressions,
            roster,
            retrain,
            EmailSettings { sender, language: self.email_language },
        )
        .with_lease(Duration::from_secs(self.claim_lease_secs))
        .with_announcement_pacing(self.email_send_rate, Duration::from_secs(self.announcement_budget_secs)))
    }
}

/// Where a table lives: DynamoDB, or the embedded store's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    DynamoDb(String),
    Embedded(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailChoice {
    Ses {
        configuration_set: Option<String>,
    },
    /// `.eml` files in this directory.
    Outbox(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrainChoice {
    /// Invoke this training-export function asynchronously.
    Lambda(String),
    /// In Lambda without `TRAINING_EXPORT_FUNCTION`: retrain requests are refused.
    NotConfigured,
    /// Run the local training-export binary (this path, or the one next to this executable).
    LocalBinary(Option<PathBuf>),
}

/// The adapter chosen for each port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composition {
    pub interactions: Storage,
    pub ledger: Storage,
    pub students: Storage,
    pub mail: MailChoice,
    pub language: Language,
    pub retrain: RetrainChoice,
}

impl Composition {
    pub fn needs_aws(&self) -> bool {
        matches!(self.interactions, Storage::DynamoDb(_))
            || matches!(self.ledger, Storage::DynamoDb(_))
            || matches!(self.students, Storage::DynamoDb(_))
            || matches!(self.mail, MailChoice::Ses { .. })
            || matches!(self.retrain, RetrainChoice::Lambda(_))
    }

    pub fn describe(&self) -> Vec<String> {
        let language = self.language.as_str();
        vec![
            match &self.interactions {
                Storage::DynamoDb(t) => format!("interactions: DynamoDB table {t}"),
                Storage::Embedded(file) => format!("interactions: embedded store {}", file.display()),
            },
            match &self.ledger {
                Storage::DynamoDb(t) => format!("ledger: DynamoDB table {t}"),
                Storage::Embedded(file) => format!("ledger: embedded, in {}", file.display()),
            },
            match &self.students {
                Storage::DynamoDb(t) => format!("students: DynamoDB table {t}"),
                Storage::Embedded(file) => format!("students: embedded, in {}", file.display()),
            },
            match &self.mail {
                MailChoice::Ses { .. } => format!("mail: SES ({language})"),
                MailChoice::Outbox(dir) => format!("mail: outbox {} ({language})", dir.display()),
            },
            match &self.retrain {
                RetrainChoice::Lambda(f) => format!("retrain: Lambda {f}"),
                RetrainChoice::NotConfigured => {
                    "retrain: not configured (TRAINING_EXPORT_FUNCTION is unset)".into()
                }
                RetrainChoice::LocalBinary(Some(path)) => format!("retrain: local {}", path.display()),
                RetrainChoice::LocalBinary(None) => {
                    "retrain: local training-export next to this binary".into()
                }
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        config: ConsumerConfig,
    }

    fn config(args: &[&str]) -> ConsumerConfig {
        let mut argv = vec!["event-consumer"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).unwrap().config
    }

    #[test]
    fn local_defaults_need_nothing() {
        let c = config(&[]);
        assert_eq!(c.mail_transport, MailTransport::Outbox);
        assert_eq!(c.email_language, Language::Vi);
        assert_eq!(c.claim_lease_secs, 60);
        c.validate(Runtime::Local).unwrap();
        assert_eq!(c.sender().unwrap().as_str(), DEFAULT_OUTBOX_SENDER);
    }

    #[test]
    fn ses_needs_a_sender_that_is_an_address() {
        let err = config(&["--mail-transport", "ses"]).validate(Runtime::Local).unwrap_err().to_string();
        assert!(err.contains("EMAIL_SENDER"), "{err}");
        let err = config(&["--mail-transport", "ses", "--email-sender", "nobody"])
            .validate(Runtime::Local)
            .unwrap_err()
            .to_string();
        assert!(err.contains("EMAIL_SENDER is not a usable address"), "{err}");
        config(&["--mail-transport", "ses", "--email-sender", "no-reply@student.vn"])
            .validate(Runtime::Local)
            .unwrap();
    }

    #[test]
    fn lambda_refuses_embedded_adapters_and_says_which() {
        let err = config(&[]).validate(Runtime::Lambda).unwrap_err().to_string();
        for needed in ["INTERACTIONS_TABLE", "IDEMPOTENCY_TABLE", "STUDENTS_TABLE", "MAIL_TRANSPORT=ses"] {
            assert!(err.contains(needed), "{err} should name {needed}");
        }
        config(&[
            "--interactions-table",
            "interactions",
            "--idempotency-table",
            "ledger",
            "--students-table",
            "students",
            "--mail-transport",
            "ses",
            "--email-sender",
            "no-reply@student.vn",
        ])
        .validate(Runtime::Lambda)
        .unwrap();
    }

    #[test]
    fn one_composition_is_described_and_built() {
        let local = config(&["--data-dir", "/d"]).composition(Runtime::Local);
        assert!(!local.needs_aws(), "{local:?}");
        assert_eq!(local.interactions, Storage::Embedded(PathBuf::from("/d/store.db")));
        assert_eq!(local.mail, MailChoice::Outbox(PathBuf::from("/d/outbox")));
        assert_eq!(local.retrain, RetrainChoice::LocalBinary(None));
        let mixed = config(&["--interactions-table", "interactions", "--training-export-function", "te"])
            .composition(Runtime::Local);
        assert!(mixed.needs_aws());
        assert_eq!(mixed.interactions, Storage::DynamoDb("interactions".into()));
        assert!(matches!(mixed.ledger, Storage::Embedded(_)), "only the table that is set goes to DynamoDB");
        let lines = mixed.describe();
        assert_eq!(lines[0], "interactions: DynamoDB table interactions");
        assert!(lines[2].starts_with("students: embedded, in "), "{lines:?}");
        assert_eq!(lines[4], "retrain: Lambda te");
        assert_eq!(config(&[]).composition(Runtime::Lambda).retrain, RetrainChoice::NotConfigured);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let err = Args::try_parse_from(["x", "--email-language", "fr"]).err().unwrap().to_string();
        assert!(err.contains("fr") && err.contains("vi"), "{err}");
        let err = Args::try_parse_from(["x", "--claim-lease-secs", "0"]).err().unwrap().to_string();
        assert!(err.contains("0"), "{err}");
        for bad in ["-1", "fast", "NaN", "5000"] {
            let arg = format!("--email-send-rate={bad}");
            let err = Args::try_parse_from(["x", arg.as_str()]).err().unwrap().to_string();
            assert!(err.contains("not a rate"), "{bad}: {err}");
        }
        assert_eq!(config(&["--email-send-rate", "2.5"]).email_send_rate, 2.5);
    }
}
