//! `recommender train | evaluate | bench | info`: the embedded recommender from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use recommender::evaluate::{self, default_specs};
use recommender::synthetic::{self, SyntheticSpec};
use recommender::{
    Model, ModelRegistry, ModelSpec, QueryOptions, TrainConfig, TrainError, read_interactions, try_train,
};

#[derive(Parser)]
#[command(name = "recommender", about = "Train, evaluate and benchmark the embedded recommender")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// auto (choose on a time-held-out slice), popularity, item-knn, ease, sparse-ease, ials or ease+ials.
    #[arg(long, default_value = "auto")]
    model: String,
    /// Seed for everything random (iALS initialisation, the evaluation split).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Peak memory a dense model may take while fitting, in MiB (default 1024, or
    /// $RECOMMENDER_MEMORY_BUDGET_MB).
    #[arg(long)]
    memory_budget_mb: Option<u64>,
    /// EASE penalty when `--model ease` or `ease+ials` is forced.
    #[arg(long)]
    ease_lambda: Option<f64>,
    /// Weight of an EVENT_TYPE, as TYPE=WEIGHT; repeatable (defaults: enrolled=1, submitAssignment=0.5).
    #[arg(long = "event-weight", value_parser = parse_weight)]
    event_weights: Vec<(String, f32)>,
    /// Neighbours kept per item by item-knn.
    #[arg(long)]
    knn_neighbours: Option<usize>,
    /// Shrinkage of item-knn's cosine similarity (larger: trust small overlaps less).
    #[arg(long)]
    knn_shrink: Option<f32>,
    /// Threads for iALS (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_weight(s: &str) -> Result<(String, f32), String> {
    let (k, v) = s.split_once('=').ok_or("expected TYPE=WEIGHT")?;
    let w: f32 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    if !w.is_finite() || w < 0.0 {
        return Err("weights are finite and not negative".into());
    }
    Ok((k.to_owned(), w))
}

impl ModelArgs {
    fn config(&self) -> Result<TrainConfig, String> {
        let mut config = TrainConfig { seed: self.seed, threads: self.threads, ..TrainConfig::default() };
        if let Some(mb) = self.memory_budget_mb {
            config.memory_budget_bytes = mb << 20;
        }
        for (k, w) in &self.event_weights {
            config.event_weights.insert(k.clone(), *w);
        }
        if let Some(k) = self.knn_neighbours {
            config.knn_neighbours = k;
        }
        if let Some(s) = self.knn_shrink {
            config.knn_shrink = s;
        }
        if let Some(l) = self.ease_lambda {
            config.ease_lambdas = vec![l];
        }
        config.model = spec_named(&self.model, &config)?;
        Ok(config)
    }
}

/// `None` for auto; otherwise the named model with the configuration's default settings.
fn spec_named(name: &str, config: &TrainConfig) -> Result<Option<ModelSpec>, String> {
    if name == "auto" {
        return Ok(None);
    }
    default_specs(config).into_iter().find(|s| s.name() == name).map(Some).ok_or_else(|| {
        format!("unknown model {name:?}; expected auto, popularity, item-knn, ease, sparse-ease, ials or ease+ials")
    })
}

#[derive(Subcommand)]
enum Command {
    /// Train on an interactions file (CSV or .parquet) and publish the model as a new version.
    Train {
        #[arg(long)]
        interactions: PathBuf,
        /// The models directory ($DATA_DIR/models); the version goes in DIR/<version>/.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Offline evaluation: per-user 80/20 split (random, or the latest 20 % held out), full ranking,
    /// Recall/Precision/NDCG.
    Evaluate {
        #[arg(long)]
        interactions: PathBuf,
        /// random: each user's test items drawn from the seed; temporal: each user's latest 20 %
        /// (what a nightly retrain faces).
        #[arg(long, default_value = "random")]
        protocol: evaluate::Protocol,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// One JSON object per line per model.
        #[arg(long)]
        json: bool,
        /// Comma-separated models to evaluate (default: every model, then auto).
        #[arg(long)]
        models: Option<String>,
        /// Also write the split (train.csv, test.csv) to this directory.
        #[arg(long)]
        dump_split: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Model load time and top-N latency on synthetic data.
    Bench {
        #[arg(long, default_value_t = 10_000)]
        items: usize,
        #[arg(long, default_value_t = 20_000)]
        users: usize,
        /// Comma-separated models to benchmark.
        #[arg(long, default_value = "ials,item-knn,ease")]
        models: String,
        #[arg(long, default_value_t = 25)]
        n: usize,
        #[arg(long, default_value_t = 5_000)]
        queries: usize,
        /// Where to write the model files (default: a directory under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print a model's info (the latest version of a models directory, or a model file).
    Info { path: PathBuf },
}

/// `println!` for the program's output, except that a reader who closed the pipe (`| head -1`)
/// ends the program quietly with success, as Unix tools do; `println!` would panic there.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("failed printing to stdout: {e}");
        }
    }};
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Train { interactions, out, model } => {
            let config = model.config()?;
            let trained = try_train(read_interactions(&interactions)?, &config)?;
            let registry = ModelRegistry::in_dir(&out);
            let version = runtime()?.block_on(registry.publish(&trained))?;
            let info = trained.info();
            eprintln!(
                "published {version} to {}: {} ({} users, {} items, {} interactions) in {:.2}s",
                registry.model_location(&version),
                info.model,
                info.users,
                info.items,
                info.interactions,
                info.fit_seconds
            );
            for c in &info.selection.candidates {
                eprintln!(
                    "  validation {:<10} ndcg@10 {:.4} recall@20 {:.4} fit {:.2}s  {}",
                    c.spec.name(),
                    c.ndcg_at_10,
                    c.recall_at_20,
                    c.fit_seconds,
                    serde_json::to_string(&c.spec)?
                );
            }
            out!("{version}");
            Ok(())
        }
        Command::Evaluate { interactions, protocol, k, json, models, dump_split, model } => {
            let config = model.config()?;
            let seed = config.seed;
            let rows = read_interactions(&interactions)?.collect::<Result<Vec<_>, _>>()?;
            let split = evaluate::split(rows, protocol, seed, 0.2);
            if let Some(dir) = dump_split {
                split.dump(&dir)?;
            }
            let specs: Vec<Option<ModelSpec>> = match models {
                Some(list) => {
                    list.split(',').map(|m| spec_named(m.trim(), &config)).collect::<Result<_, _>>()?
                }
                None => default_specs(&config).into_iter().map(Some).chain([None]).collect(),
            };
            if !json {
                out!(
                    "{:<12} {:>10} {:>9} {:>10} {:>12} {:>8}  chosen",
                    "model",
                    format!("recall@{k}"),
                    format!("ndcg@{k}"),
                    format!("recall@{}", 2 * k),
                    format!("precision@{k}"),
                    "fit s"
                );
            }
            let mut evaluated = 0;
            for spec in specs {
                let name = spec.as_ref().map_or("auto", ModelSpec::name);
                // A model that does not fit the memory budget is reported and skipped; the
                // rest of the list still runs (a large catalog must not hide iALS and auto).
                let e = match evaluate::evaluate(&split, spec.as_ref(), &config, k) {
                    Err(e @ TrainError::OverMemoryBudget { .. }) => {
                        if json {
                            out!("{}", serde_json::json!({"model": name, "skipped": e.to_string()}));
                        } else {
                            out!("{name:<12} skipped: {e}");
                        }
                        continue;
                    }
                    result => result?,
                };
                evaluated += 1;
                if json {
                    out!("{}", e.to_json());
                } else {
                    out!(
                        "{:<12} {:>10.4} {:>9.4} {:>10.4} {:>12.4} {:>8.2}  {}",
                        e.model,
                        e.recall_at_k,
                        e.ndcg_at_k,
                        e.recall_at_2k,
                        e.precision_at_k,
                        e.fit_seconds,
                        e.chosen.unwrap_or_default()
                    );
                }
            }
            if evaluated == 0 {
                return Err("no model fits the memory budget (--memory-budget-mb)".into());
            }
            Ok(())
        }
        Command::Bench { items, users, models, n, queries, dir, model } => {
            bench(items, users, &models, n, queries, dir, &model.config()?)
        }
        Command::Info { path } => {
            let model = if path.is_dir() {
                runtime()?.block_on(ModelRegistry::in_dir(&path).load_latest())?.1
            } else {
                Model::load(&path)?
            };
            out!("{}", serde_json::to_string_pretty(model.info())?);
            Ok(())
        }
    }
}

/// The registry is async (its store may be a bucket); one command needs one thread to drive it.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench(
    items: usize,
    users: usize,
    models: &str,
    n: usize,
    queries: usize,
    dir: Option<PathBuf>,
    config: &TrainConfig,
) -> CliResult<()> {
    let spec = SyntheticSpec { users, items, ..SyntheticSpec::default() };
    let rows = synthetic::generate(&spec);
    let dir =
        dir.unwrap_or_else(|| std::env::temp_dir().join(format!("recommender-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;
    out!(
        "synthetic data: {users} users, {items} items, {} rows; top-{n}, {queries} queries per row; SIMD: {}",
        rows.len(),
        recommender::simd_level()
    );
    out!(
        "{:<10} {:>7} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "model",
        "items",
        "fit s",
        "file MB",
        "load ms",
        "p50 µs",
        "p99 µs",
        "mean µs",
        "unknown µs"
    );
    for name in models.split(',').map(str::trim) {
        let spec = spec_named(name, config)?.ok_or("bench needs named models, not auto")?;
        let config = TrainConfig { model: Some(spec), ..config.clone() };
        let started = Instant::now();
        let trained = recommender::train(rows.iter().cloned(), &config)?;
        let fit = started.elapsed().as_secs_f64();
        let path = dir.join(format!("{name}.bin"));
        trained.save(&path)?;
        let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        drop(trained);
        // Cold-start path: read the file, verify the checksum, decode, build the id maps.
        let mut loads = Vec::new();
        let mut model = None;
        for _ in 0..5 {
            let t = Instant::now();
            model = Some(Model::load(&path)?);
            loads.push(t.elapsed());
        }
        loads.sort();
        let model = model.expect("loaded at least once");
        let user_ids: Vec<String> =
            (0..users).map(|u| format!("student-{u}")).filter(|u| model.knows_user(u)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let opts = QueryOptions::default();
        let mut checksum = 0usize;
        for _ in 0..queries.min(500) {
            let u = &user_ids[rng.random_range(0..user_ids.len())];
            checksum += model.recommend(u, n, &opts).items.len();
        }
        let mut times = Vec::with_capacity(queries);
        for _ in 0..queries {
            let u = &user_ids[rng.random_range(0..user_ids.len())];
            let t = Instant::now();
            let recs = model.recommend(u, n, &opts);
            times.push(t.elapsed());
            checksum += recs.items.len();
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let t = Instant::now();
        for q in 0..queries {
            checksum += model.recommend(&format!("nobody-{q}"), n, &opts).items.len();
        }
        let unknown = t.elapsed() / queries as u32;
        assert!(checksum > 0, "the benchmark must produce recommendations");
        out!(
            "{:<10} {:>7} {:>9.2} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>12.1}",
            name,
            model.n_items(),
            fit,
            size_mb,
            loads[loads.len() / 2].as_secs_f64() * 1e3,
            micros(percentile(&times, 0.5)),
            micros(percentile(&times, 0.99)),
            micros(mean),
            micros(unknown)
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
