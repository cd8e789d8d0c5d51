//! EventBridge domain events → interaction records, enrollment confirmation emails
//! and manual retrains, each exactly once per event id although EventBridge
//! delivers at least once and out of order.
//!
//! * [`consumer::Consumer`]: the domain, behind four ports: [`store::InteractionSink`],
//!   [`mail::Mailer`], [`ledger::IdempotencyLedger`] and [`retrain::RetrainTrigger`],
//!   each with an AWS adapter and an embedded one.
//! * [`config::ConsumerConfig`]: the environment, validated, and the composition it selects.
//! * [`publisher::EventPublisher`]: the app side, `PutEvents` with the right source.
//! * [`cli`] and [`lambda`]: the one binary's two faces.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod error;
pub mod lambda;
pub mod ledger;
pub mod mail;
pub mod publisher;
pub mod retrain;
pub mod roster;
pub mod suppression;

pub use config::{ConsumerConfig, MailTransport, Runtime};
pub use consumer::{Consumer, EffectOutcome, EmailSettings, InteractionOutcome, Outcome};
pub use error::ConsumerError;
pub use mail::Language;
pub use publisher::{EventPublisher, PublishError};

/// The IAM actions the Lambda's code needs, nothing more: the infra template grants
/// exactly these (`infra/tests`), and a test there scans the sources for the AWS SDK calls
/// behind them, so the list cannot drift from the code.
///
/// * `dynamodb:PutItem`: interaction records (`store::dynamodb`) and ledger claims;
///   `GetItem`, `UpdateItem`, `DeleteItem`: the idempotency ledger (`ledger::dynamodb`);
///   `PutItem` and `Query` on the students table: class rosters (`roster::dynamodb`).
/// * `ses:SendEmail`: confirmation emails (`mail::ses`); `ses:PutSuppressedDestination`:
///   a hard bounce or complaint also goes on the account's suppression list (`mail::ses`).
/// * `lambda:InvokeFunction`: `ranking.requestUpdate` starts training-export (`retrain`).
///
/// [`publisher::EventPublisher`] (`events:PutEvents`) is the CLI's `publish` command only.
pub const AWS_ACTIONS: &[&str] = &[
    "dynamodb:PutItem",
    "dynamodb:GetItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "ses:SendEmail",
    "ses:PutSuppressedDestination",
    "lambda:InvokeFunction",
];
