//! The export benchmark's Rust half (`scripts/bench-export`), kept out of the production
//! CLI: `generate` writes N synthetic raw interactions as CSV; `convert` turns a raw file
//! into the export's CSV + Parquet with the export code (the scan path) and prints JSON
//! figures; `dynamodb-export` writes a raw file in the layout of a DynamoDB table export
//! (not timed as a conversion); `convert-table-export` converts that layout file by file
//! as the pipeline does (the table-export path) and prints the same JSON figures.
//!
//!     cargo run --release -p training-export --example bench_export -- generate --rows 1000000 --out raw.csv
//!     cargo run --release -p training-export --example bench_export -- convert --source raw.csv --out dir
//!     cargo run --release -p training-export --example bench_export -- dynamodb-export --source raw.csv --out ddb
//!     cargo run --release -p training-export --example bench_export -- convert-table-export --dir ddb

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use training_export::bench;
use training_export::manifest::Manifest;

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
    /// Write a raw file as a DynamoDB table export (gzipped DynamoDB JSON data files,
    /// manifest-files.json, manifest-summary.json) into a directory; prints JSON figures.
    DynamodbExport {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Items per data file.
        #[arg(long, default_value_t = 1_000_000)]
        items_per_file: usize,
    },
    /// Convert a table export written by `dynamodb-export`, file by file, as the pipeline
    /// does; prints JSON figures (the same fields as `convert`).
    ConvertTableExport {
        #[arg(long)]
        dir: PathBuf,
        /// The key of its manifest-summary.json (as `dynamodb-export` prints it).
        #[arg(long, default_value = bench::TABLE_EXPORT_SUMMARY)]
        manifest: String,
    },
}

fn figures(manifest: &Manifest, elapsed: Duration) -> serde_json::Value {
    serde_json::json!({
        "rows": manifest.rows,
        "seconds": elapsed.as_secs_f64(),
        "rowsPerSecond": manifest.rows as f64 / elapsed.as_secs_f64(),
        "peakRssBytes": bench::peak_rss_bytes(),
        "csvBytes": manifest.csv.size,
        "parquetBytes": manifest.parquet.as_ref().map(|p| p.size),
    })
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
            println!("{}", figures(&manifest, elapsed));
        }
        Command::DynamodbExport { source, out, items_per_file } => {
            let started = Instant::now();
            let summary = bench::write_table_export(&source, &out, items_per_file).await?;
            let (files, bytes) = bench::data_file_sizes(&out, &summary).await?;
            let figures = serde_json::json!({
                "manifestKey": summary,
                "seconds": started.elapsed().as_secs_f64(),
                "dataFiles": files,
                "dataFileBytes": bytes,
            });
            println!("{figures}");
        }
        Command::ConvertTableExport { dir, manifest } => {
            let (manifest, files, elapsed) = bench::convert_table_export(&dir, &manifest).await?;
            let mut figures = figures(&manifest, elapsed);
            figures["dataFiles"] = files.into();
            println!("{figures}");
        }
    }
    Ok(())
}
