//! How long any AWS call may take: every client the workspace builds gets a connect
//! timeout, a timeout per attempt and one for the whole operation (all attempts and the
//! backoff between them), chosen for the calls that client makes. Without them a
//! half-open connection waits as long as the Lambda lives.
//!
//! | client | calls | attempt | operation |
//! | --- | --- | --- | --- |
//! | DynamoDB | `GetItem`, conditional `PutItem`/`UpdateItem`, one `Scan` page (1 MB at most) | 5 s | 12 s |
//! | S3 | `UploadPart` of up to `PART_SIZE_MIB` (8 MiB by default), `GetObject` headers, listings | 60 s | 180 s |
//! | SES | `SendEmail`, sent once (no retry: it has no idempotency key) | 8 s | 8 s |
//! | EventBridge | `PutEvents` of one entry | 5 s | 12 s |
//! | Lambda | asynchronous `Invoke` (202 as soon as it is queued) | 5 s | 12 s |
//! | Personalize | control plane: `Create*`, `Describe*`, `UpdateCampaign` | 15 s | 45 s |
//!
//! Every client connects within 3 s. An operation timeout covers the request and the
//! response's headers; a streamed body (`GetObject`) is read afterwards, outside it.
//!
//! **Overrides**, read once at start by [`AwsTimeouts::from_env`], in milliseconds:
//! `AWS_CONNECT_TIMEOUT_MS` for every client, and `<SERVICE>_TIMEOUT_MS` (operation) and
//! `<SERVICE>_ATTEMPT_TIMEOUT_MS` per client, where `<SERVICE>` is `DYNAMODB`, `S3`,
//! `SES`, `EVENTBRIDGE`, `LAMBDA_INVOKE` or `PERSONALIZE_CONTROL` (not `PERSONALIZE`:
//! `PERSONALIZE_TIMEOUT_MS` is the ranking API's Personalize Runtime budget). Raise
//! `S3_ATTEMPT_TIMEOUT_MS` with `PART_SIZE_MIB` on a slow link.

use std::time::Duration;

use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;

/// The shortest and longest value an override may have (15 minutes: a Lambda's life).
pub const OVERRIDE_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=900_000;

/// The bounds of one client's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// One attempt: sending the request and receiving the response's headers.
    pub attempt: Duration,
    /// The whole operation: every attempt and the backoff between them.
    pub operation: Duration,
}

impl ClientTimeouts {
    const fn secs(connect: u64, attempt: u64, operation: u64) -> Self {
        Self {
            connect: Duration::from_secs(connect),
            attempt: Duration::from_secs(attempt),
            operation: Duration::from_secs(operation),
        }
    }

    /// As the SDK wants it.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    /// `base` with these timeouts, for one client: `Client::new(&timeouts.dynamodb.apply(&aws))`.
    /// Region, credentials, endpoint and retry settings are kept.
    pub fn apply(&self, base: &SdkConfig) -> SdkConfig {
        base.to_builder().timeout_config(self.timeout_config()).build()
    }
}

/// The AWS clients of this workspace, each with its own timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    S3,
    Ses,
    EventBridge,
    Lambda,
    Personalize,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Service::DynamoDb,
        Service::S3,
        Service::Ses,
        Service::EventBridge,
        Service::Lambda,
        Service::Personalize,
    ];

    /// The `<SERVICE>` of its override variables.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Service::DynamoDb => "DYNAMODB",
            Service::S3 => "S3",
            Service::Ses => "SES",
            Service::EventBridge => "EVENTBRIDGE",
            Service::Lambda => "LAMBDA_INVOKE",
            Service::Personalize => "PERSONALIZE_CONTROL",
        }
    }

    /// The bounds used when nothing overrides them (see the module docs for why).
    pub const fn defaults(self) -> ClientTimeouts {
        match self {
            Service::DynamoDb => ClientTimeouts::secs(3, 5, 12),
            Service::S3 => ClientTimeouts::secs(3, 60, 180),
            Service::Ses => ClientTimeouts::secs(3, 8, 8),
            Service::EventBridge => ClientTimeouts::secs(3, 5, 12),
            Service::Lambda => ClientTimeouts::secs(3, 5, 12),
            Service::Personalize => ClientTimeouts::secs(3, 15, 45),
        }
    }
}

/// The timeouts of every client of a process, read once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    pub dynamodb: ClientTimeouts,
    pub s3: ClientTimeouts,
    pub ses: ClientTimeouts,
    pub eventbridge: ClientTimeouts,
    pub lambda: ClientTimeouts,
    pub personalize: ClientTimeouts,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        Self {
            dynamodb: Service::DynamoDb.defaults(),
            s3: Service::S3.defaults(),
            ses: Service::Ses.defaults(),
            eventbridge: Service::EventBridge.defaults(),
            lambda: Service::Lambda.defaults(),
            personalize: Service::Personalize.defaults(),
        }
    }
}

/// An override that cannot be used; the message names the variable and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeoutOverrideError(String);

impl AwsTimeouts {
    /// The defaults with the overrides set in the environment (see the module docs).
    pub fn from_env() -> Result<Self, TimeoutOverrideError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`AwsTimeouts::from_env`], reading variables through `lookup`. An empty value
    /// counts as unset (deployment templates leave them empty).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, TimeoutOverrideError> {
        let read = |name: &str| -> Result<Option<Duration>, TimeoutOverrideError> {
            let Some(raw) = lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            match raw.parse::<u64>() {
                Ok(ms) if OVERRIDE_RANGE_MS.contains(&ms) => Ok(Some(Duration::from_millis(ms))),
                _ => Err(TimeoutOverrideError(format!(
                    "{name}={raw:?} is not a whole number of milliseconds from {} to {}",
                    OVERRIDE_RANGE_MS.start(),
                    OVERRIDE_RANGE_MS.end()
                ))),
            }
        };
        let connect = read("AWS_CONNECT_TIMEOUT_MS")?;
        let mut timeouts = Self::default();
        for service in Service::ALL {
            let prefix = service.env_prefix();
            let defaults = service.defaults();
            let operation = read(&format!("{prefix}_TIMEOUT_MS"))?;
            let attempt = read(&format!("{prefix}_ATTEMPT_TIMEOUT_MS"))?;
            let resolved = match (attempt, operation) {
                (Some(a), Some(o)) if a > o => {
                    return Err(TimeoutOverrideError(format!(
                        "{prefix}_ATTEMPT_TIMEOUT_MS ({} ms) is longer than {prefix}_TIMEOUT_MS ({} ms), \
                         which bounds every attempt together",
                        a.as_millis(),
                        o.as_millis()
                    )));
                }
                (Some(a), Some(o)) => ClientTimeouts { attempt: a, operation: o, ..defaults },
                // A shorter operation bounds the attempt too.
                (None, Some(o)) => {
                    ClientTimeouts { attempt: defaults.attempt.min(o), operation: o, ..defaults }
                }
                // A longer attempt needs an operation that lets it finish.
                (Some(a), None) => {
                    ClientTimeouts { attempt: a, operation: defaults.operation.max(a), ..defaults }
                }
                (None, None) => defaults,
            };
            *timeouts.get_mut(service) =
                ClientTimeouts { connect: connect.unwrap_or(defaults.connect), ..resolved };
        }
        Ok(timeouts)
    }

    pub fn get(&self, service: Service) -> ClientTimeouts {
        match service {
            Service::DynamoDb => self.dynamodb,
            Service::S3 => self.s3,
            Service::Ses => self.ses,
            Service::EventBridge => self.eventbridge,
            Service::Lambda => self.lambda,
            Service::Personalize => self.personalize,
        }
    }

    fn get_mut(&mut self, service: Service) -> &mut ClientTimeouts {
        match service {
            Service::DynamoDb => &mut self.dynamodb,
            Service::S3 => &mut self.s3,
            Service::Ses => &mut self.ses,
            Service::EventBridge => &mut self.eventbridge,
            Service::Lambda => &mut self.lambda,
            Service::Personalize => &mut self.personalize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<AwsTimeouts, TimeoutOverrideError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AwsTimeouts::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn every_client_has_all_three_bounds_and_attempts_fit_in_the_operation() {
        for service in Service::ALL {
            let t = service.defaults();
            assert!(t.attempt <= t.operation, "{service:?}");
            let config = t.timeout_config();
            assert_eq!(config.connect_timeout(), Some(Duration::from_secs(3)), "{service:?}");
            assert_eq!(config.operation_attempt_timeout(), Some(t.attempt), "{service:?}");
            assert_eq!(config.operation_timeout(), Some(t.operation), "{service:?}");
        }
        // Uploading a part takes longer than reading an item; SES gets one attempt's worth.
        assert!(Service::S3.defaults().attempt > Service::DynamoDb.defaults().attempt);
        assert_eq!(Service::Ses.defaults().attempt, Service::Ses.defaults().operation);
        assert_eq!(with(&[]).unwrap(), AwsTimeouts::default());
    }

    #[test]
    fn apply_keeps_the_rest_of_the_shared_configuration() {
        let base = SdkConfig::builder()
            .region(aws_types::region::Region::new("ap-southeast-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        let applied = Service::S3.defaults().apply(&base);
        assert_eq!(applied.region().map(|r| r.as_ref()), Some("ap-southeast-1"));
        assert_eq!(applied.endpoint_url(), Some("http://127.0.0.1:1"));
        assert_eq!(applied.timeout_config(), Some(&Service::S3.defaults().timeout_config()));
    }

    #[test]
    fn overrides_are_per_client_and_connect_is_shared() {
        let t = with(&[
            ("AWS_CONNECT_TIMEOUT_MS", "1500"),
            ("S3_ATTEMPT_TIMEOUT_MS", "240000"),
            ("SES_TIMEOUT_MS", "3000"),
            ("DYNAMODB_TIMEOUT_MS", "20000"),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "4000"),
            ("EVENTBRIDGE_TIMEOUT_MS", " "),
        ])
        .unwrap();
        assert!(Service::ALL.iter().all(|s| t.get(*s).connect == Duration::from_millis(1500)));
        // A longer attempt stretches the operation; a shorter operation shortens the attempt.
        assert_eq!((t.s3.attempt, t.s3.operation), (Duration::from_secs(240), Duration::from_secs(240)));
        assert_eq!((t.ses.attempt, t.ses.operation), (Duration::from_secs(3), Duration::from_secs(3)));
        assert_eq!(
            (t.dynamodb.attempt, t.dynamodb.operation),
            (Duration::from_secs(4), Duration::from_secs(20))
        );
        assert_eq!(t.eventbridge.operation, Service::EventBridge.defaults().operation, "empty is unset");
    }

    #[test]
    fn bad_overrides_name_the_variable() {
        let err = with(&[("LAMBDA_INVOKE_TIMEOUT_MS", "5s")]).unwrap_err().to_string();
        assert!(err.contains("LAMBDA_INVOKE_TIMEOUT_MS=\"5s\"") && err.contains("milliseconds"), "{err}");
        let err = with(&[("PERSONALIZE_CONTROL_TIMEOUT_MS", "0")]).unwrap_err().to_string();
        assert!(err.contains("PERSONALIZE_CONTROL_TIMEOUT_MS"), "{err}");
        let err =
            with(&[("SES_TIMEOUT_MS", "1000"), ("SES_ATTEMPT_TIMEOUT_MS", "2000")]).unwrap_err().to_string();
        assert!(
            err.contains("SES_ATTEMPT_TIMEOUT_MS (2000 ms) is longer than SES_TIMEOUT_MS (1000 ms)"),
            "{err}"
        );
    }
}
