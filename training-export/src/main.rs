//! `training-export`: the pipeline from a terminal. With no AWS configuration it runs
//! entirely on the data directory: `run` exports the embedded store and trains and
//! publishes an embedded model version; `export` re-exports only; `status` prints the
//! last runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use training_export::config::Config;
use training_export::pipeline::{Deadline, Request, Response};
use training_export::{app, bench};

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
    /// Benchmark helper: write N synthetic raw interactions as CSV.
    #[command(hide = true)]
    BenchGenerate {
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 100_000)]
        users: u32,
        #[arg(long, default_value_t = 2_000)]
        items: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmark helper: convert a raw file with the export code; prints JSON figures.
    #[command(hide = true)]
    BenchConvert {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn print(response: &Response) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(response).expect("responses serialize"));
    match (response.outcome, response.run.as_ref().map(|r| r.status)) {
        ("refused", _) => ExitCode::from(2),
        (_, Some("Failed" | "Rejected")) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

fn print_status(response: &Response) {
    println!("{:<22} {:<10} {:<9} {:<9} {:>9}  details", "run", "kind", "trigger", "status", "rows");
    for r in &response.runs {
        let details = match (&r.reason, &r.last_error, &r.deployed) {
            (Some(reason), _, _) => format!("{:?}: {reason}", r.step.expect("reasons come with a step")),
            (_, Some(e), _) => format!("waiting; last error: {e}"),
            (_, _, Some(v)) => format!("deployed {v}"),
            _ => String::new(),
        };
        let rows = r.rows.map(|n| n.to_string()).unwrap_or_default();
        println!(
            "{:<22} {:<10} {:<9} {:<9} {:>9}  {details}",
            r.run_id,
            format!("{:?}", r.kind),
            r.trigger,
            r.status,
            rows
        );
    }
    if response.runs.is_empty() {
        println!("no runs yet");
    }
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
        Command::BenchGenerate { rows, users, items, out } => {
            let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
            bench::generate(rows, users, items, 20_261_122, &mut file)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::BenchConvert { source, out } => {
            let (manifest, elapsed) = bench::convert(&source, &out).await?;
            let figures = serde_json::json!({
                "rows": manifest.rows,
                "seconds": elapsed.as_secs_f64(),
                "rowsPerSecond": manifest.rows as f64 / elapsed.as_secs_f64(),
                "peakRssBytes": bench::peak_rss_bytes(),
                "csvBytes": manifest.csv.size,
                "parquetBytes": manifest.parquet.size,
            });
            println!("{figures}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut pipeline = app::build(&cli.config, false).await?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} exporting: {pos} rows ({per_sec}) {elapsed}")
                .expect("a valid template"),
        );
        bar
    });
    if let Some(bar) = &bar {
        let bar = bar.clone();
        pipeline.progress = Some(Arc::new(move |rows| bar.set_position(rows)));
    }
    let is_status = matches!(request, Request::Status {});
    let response = pipeline.handle(request, Deadline::none()).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let response = response?;
    if is_status {
        print_status(&response);
        return Ok(ExitCode::SUCCESS);
    }
    Ok(print(&response))
}
