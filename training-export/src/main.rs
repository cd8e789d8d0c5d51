//! `training-export`: the pipeline from a terminal. With no AWS configuration it runs
//! entirely on the data directory: `run` exports the embedded store and trains and
//! publishes an embedded model version; `export` re-exports only; `status` prints the
//! last runs.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use training_export::config::Config;
use training_export::pipeline::{Deadline, Request};
use training_export::{app, cli};

#[derive(Parser)]
#[command(name = "training-export", about = "Export interactions, retrain, update the campaign")]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a full run: export, validate, import, train, gate, deploy (as far as it can go now).
    Run,
    /// Start an export-only run.
    Export,
    /// Advance the active run (what the 10-minute schedule does).
    Advance,
    /// Print the latest runs.
    Status,
    /// Put back the version that was live before the last deploy.
    Rollback,
    /// End the active run `Failed` now (a stuck run, a run no longer wanted).
    Cancel {
        /// Only if this is the active run's id.
        #[arg(long)]
        run_id: Option<String>,
        /// Why, recorded in the run.
        #[arg(long)]
        reason: Option<String>,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// A spinner with the exported row count, when stderr is a terminal.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} exporting: {pos} rows ({per_sec}) {elapsed}")
                .expect("a valid template"),
        );
        bar
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    init_logs();
    let cli = Cli::parse();
    let request = match cli.command {
        Command::Run => Request::run("cli", None),
        Command::Export => Request::Export { trigger: "cli".into() },
        Command::Advance => Request::Advance {},
        Command::Status => Request::Status {},
        Command::Rollback => Request::Rollback { trigger: "cli".into() },
        Command::Cancel { run_id, reason } => Request::Cancel { trigger: "cli".into(), run_id, reason },
    };
    let mut pipeline = app::build(&cli.config, false).await?;
    let bar = progress_bar();
    if let Some(bar) = bar.clone() {
        pipeline.progress = Some(Arc::new(move |rows| bar.set_position(rows)));
    }
    let response = pipeline.handle(request, Deadline::none()).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(ExitCode::from(cli::print(&response?)))
}
