//! The command line: `handle` runs one event through the consumer (embedded
//! adapters by default, AWS ones when their variables are set); `publish` puts a
//! domain event on the bus.
//!
//! Exit codes: 0 handled (or already handled); 65 the event was rejected (bad
//! input, retrying cannot help); 75 a temporary failure (run it again); 1 any other
//! failure that needs a person; 78 bad configuration.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use schemas::events::EVENT_BUS_NAME;
use schemas::{DetailType, DomainEvent};

use crate::config::{ConsumerConfig, MailChoice, Runtime};
use crate::error::ConsumerError;
use crate::mail::simulator;
use crate::publisher::EventPublisher;

pub const EXIT_REJECTED: u8 = 65;
pub const EXIT_TEMPORARY: u8 = 75;
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "event-consumer",
    version,
    about = "Student events → interactions, confirmation emails, retrains"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Handle one EventBridge event, as a rule target receives it.
    Handle {
        /// JSON file holding the event; `-` or no flag reads standard input.
        #[arg(long)]
        event: Option<PathBuf>,
        #[command(flatten)]
        config: ConsumerConfig,
    },
    /// Publish a domain event on the bus (needs AWS credentials and region).
    Publish {
        /// e.g. student.enrolled, ranking.requestUpdate
        #[arg(long)]
        detail_type: String,
        /// The detail JSON, e.g. '{"trigger":"manual"}'
        #[arg(long)]
        detail: String,
        #[arg(long, env = "EVENT_BUS_NAME", default_value = EVENT_BUS_NAME)]
        event_bus_name: String,
    },
}

/// The binary's entry: Lambda when the runtime API is there, the CLI otherwise.
pub async fn main() -> ExitCode {
    if Runtime::detect() == Runtime::Lambda {
        return match crate::lambda::run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("event-consumer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_cli_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Handle { event, config } => handle(event, config).await,
        Command::Publish { detail_type, detail, event_bus_name } => {
            publish(&detail_type, &detail, &event_bus_name).await
        }
    }
}

/// The CLI speaks through its own lines; logs are for RUST_LOG=info and up.
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn read_event(path: Option<PathBuf>) -> std::io::Result<(Vec<u8>, String)> {
    match path {
        Some(p) if p.as_os_str() != "-" => Ok((std::fs::read(&p)?, p.display().to_string())),
        _ => {
            let mut raw = Vec::new();
            std::io::stdin().read_to_end(&mut raw)?;
            Ok((raw, "standard input".into()))
        }
    }
}

async fn handle(event: Option<PathBuf>, config: ConsumerConfig) -> ExitCode {
    let (raw, source) = match read_event(event) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: reading the event: {e}");
            return ExitCode::from(EXIT_REJECTED);
        }
    };
    let outbox = match config.composition(Runtime::Local).mail {
        MailChoice::Outbox(dir) => Some(dir),
        MailChoice::Ses { .. } => None,
    };
    let consumer = match config.build(Runtime::Local).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match consumer.handle_json(&raw).await {
        Ok(outcome) => {
            println!("event {} ({}) from {source}", outcome.event_id, outcome.detail_type);
            for line in outcome.report_lines() {
                println!("{line}");
            }
            match outbox {
                Some(dir) => deliver_simulated_ses_events(&consumer, &dir).await,
                None => ExitCode::SUCCESS,
            }
        }
        Err(err) => {
            let (advice, code) = exit_for(&err);
            eprintln!("error: {err}");
            eprintln!("{advice}");
            ExitCode::from(code)
        }
    }
}

/// Locally the outbox plays SES's mailbox simulator: the events SES would publish about
/// the mail just written wait in `outbox/ses-events/`. Deliver them now, as the bus
/// would a moment later, so the loop (bounce → suppression) closes with no AWS account.
/// A failed one stays pending for the next run.
async fn deliver_simulated_ses_events(consumer: &crate::Consumer, outbox: &std::path::Path) -> ExitCode {
    let pending = match simulator::pending_events(outbox) {
        Ok(pending) => pending,
        Err(e) => {
            eprintln!("error: reading simulated SES events in {}: {e}", outbox.display());
            return ExitCode::from(EXIT_TEMPORARY);
        }
    };
    let mut exit = ExitCode::SUCCESS;
    for file in pending {
        let result = match std::fs::read(&file) {
            Ok(raw) => consumer.handle_json(&raw).await.map_err(|e| {
                let (_, code) = exit_for(&e);
                (e.to_string(), code)
            }),
            Err(e) => Err((e.to_string(), EXIT_TEMPORARY)),
        };
        match result {
            Ok(outcome) => {
                println!("simulated SES event {} ({})", outcome.event_id, outcome.detail_type);
                for line in outcome.report_lines() {
                    println!("{line}");
                }
                if let Err(e) = simulator::mark_handled(&file) {
                    eprintln!("warning: could not move {} aside: {e}", file.display());
                }
            }
            Err((reason, code)) => {
                eprintln!("error: simulated SES event {}: {reason}", file.display());
                eprintln!("it stays in the outbox and is delivered again by the next `handle`");
                exit = ExitCode::from(code);
            }
        }
    }
    exit
}

fn exit_for(err: &ConsumerError) -> (&'static str, u8) {
    match err {
        ConsumerError::Rejected(_) => {
            ("nothing was written; fix the event, retrying it as is cannot help", EXIT_REJECTED)
        }
        e if e.is_retryable() => {
            ("temporary failure: handle the same event again to complete it", EXIT_TEMPORARY)
        }
        _ => ("not retryable: see the reason above", 1),
    }
}

async fn publish(detail_type: &str, detail: &str, bus: &str) -> ExitCode {
    let event = DetailType::parse(detail_type)
        .filter(|d| *d != DetailType::RankingPipeline)
        .ok_or_else(|| format!("unknown detail-type {detail_type:?}"))
        .and_then(|d| {
            let detail: serde_json::Value =
                serde_json::from_str(detail).map_err(|e| format!("--detail is not JSON: {e}"))?;
            DomainEvent::from_detail(d, &detail).map_err(|e| e.to_string())
        });
    let event = match event {
        Ok(e) => e,
        Err(reason) => {
            eprintln!("error: {reason}");
            return ExitCode::from(EXIT_REJECTED);
        }
    };
    let aws = match aws_failure::config::AwsSetup::load().await {
        Ok(aws) => aws,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if aws.shared().region().is_none() {
        eprintln!("error: publishing needs AWS configuration: set AWS_REGION (and credentials)");
        return ExitCode::from(EXIT_CONFIG);
    }
    let publisher = EventPublisher::new(
        aws_sdk_eventbridge::Client::new(&aws.for_service(aws_failure::timeouts::Service::EventBridge)),
        bus,
    );
    match publisher.publish(&event).await {
        Ok(id) => {
            println!(
                "published {} from {} on {bus}: event id {id}",
                event.detail_type(),
                event.detail_type().source()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_retryable() { EXIT_TEMPORARY } else { 1 })
        }
    }
}
