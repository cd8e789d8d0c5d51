//! The export benchmark's Rust half (`scripts/bench-export`), kept out of the production
//! CLI: `generate` writes N synthetic raw interactions as CSV; `convert` turns a raw file
//! into the export's CSV + Parquet with the export code and prints JSON figures.
//!
//!     cargo run --release -p training-export --example bench_export -- generate --rows 1000000 --out raw.csv
//!     cargo run --release -p training-export --example bench_export -- convert --source raw.csv --out dir

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use training_export::bench;

#[derive(Parser)]
#[command(name = "bench_export", about = "The export benchmark's Rust half")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write N synthetic raw interactions as CSV.
    Generate {
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 100_000)]
        users: u32,
        #[arg(long, default_value_t = 2_000)]
        items: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Convert a raw file with the export code; prints JSON figures.
    Convert {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Generate { rows, users, items, out } => {
            let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
            bench::generate(rows, users, items, 20_261_122, &mut file)?;
        }
        Command::Convert { source, out } => {
            let (manifest, elapsed) = bench::convert(&source, &out).await?;
            let figures = serde_json::json!({
                "rows": manifest.rows,
                "seconds": elapsed.as_secs_f64(),
                "rowsPerSecond": manifest.rows as f64 / elapsed.as_secs_f64(),
                "peakRssBytes": bench::peak_rss_bytes(),
                "csvBytes": manifest.csv.size,
                "parquetBytes": manifest.parquet.as_ref().map(|p| p.size),
            });
            println!("{figures}");
        }
    }
    Ok(())
}
