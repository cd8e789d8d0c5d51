//! Configuration: flags and environment in one place, read once at start and
//! validated with messages that say what to fix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ranking-api",
    version,
    about = "Course recommendations and rankings: GET /ranking/{userId}"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a generated demo dataset into the embedded store (for benchmarks and demos).
    SeedDemo {
        #[arg(long, default_value_t = 600)]
        students: usize,
        #[arg(long, default_value_t = 48)]
        classes: usize,
        #[arg(long, default_value_t = store::demo::DEMO_SEED)]
        seed: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the local server listens on (ignored inside Lambda).
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Where the embedded store, exports and models live.
    #[arg(long, env = "DATA_DIR", default_value = store::embedded::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Personalize campaign for GetRecommendations. Unset: the embedded recommender answers.
    #[arg(long, env = "PERSONALIZE_CAMPAIGN_ARN", value_parser = parse_arn)]
    pub campaign_arn: Option<String>,

    /// Personalize campaign for GetPersonalizedRanking (`items=` requests).
    #[arg(long, env = "PERSONALIZE_RANKING_CAMPAIGN_ARN", value_parser = parse_arn)]
    pub ranking_campaign_arn: Option<String>,

    /// Filters the API accepts, as `name=arn` pairs separated by commas.
    #[arg(long, env = "PERSONALIZE_FILTERS", value_parser = parse_filters, default_value = "")]
    pub filters: FilterMap,

    /// Deadline for one Personalize call, after which the fallback answers.
    #[arg(long, env = "PERSONALIZE_TIMEOUT_MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub personalize_timeout_ms: u64,

    /// S3 bucket the pipeline publishes model versions to (`models/LATEST`). Inside Lambda it
    /// is where the fallback (and, without Personalize, the embedded backend) gets its model.
    #[arg(long, env = "DATA_BUCKET")]
    pub data_bucket: Option<String>,

    /// Deadline for one fetch of the model from DATA_BUCKET (`LATEST` and the model file), at start
    /// and on each refresh: past it the API starts (or keeps serving) without the new model and
    /// `/health` says why. It must cover downloading a model; the S3 client's own timeouts derive from it.
    #[arg(long, env = "MODEL_SYNC_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub model_sync_timeout_ms: u64,

    /// When set, the local server requires this value in `x-api-key` (in AWS, API Gateway checks keys).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Frontend origins allowed by CORS, comma-separated (e.g. `https://app.example.edu`).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// How often to look for new data or a new model, in seconds.
    #[arg(long, env = "REFRESH_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh_seconds: u64,

    /// Memory for the embedded model's answers, kept per student until the model changes
    /// (0: answer every request from the model).
    #[arg(long, env = "ANSWER_CACHE_MB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=4096))]
    pub answer_cache_mb: u64,

    /// Do not seed the demo dataset into an empty data directory.
    #[arg(long, env = "NO_DEMO_SEED")]
    pub no_demo_seed: bool,
}

impl Config {
    pub fn personalize_timeout(&self) -> Duration {
        Duration::from_millis(self.personalize_timeout_ms)
    }

    pub fn model_sync_timeout(&self) -> Duration {
        Duration::from_millis(self.model_sync_timeout_ms)
    }

    pub fn answer_cache_bytes(&self) -> usize {
        usize::try_from(self.answer_cache_mb).unwrap_or(usize::MAX).saturating_mul(1 << 20)
    }

    pub fn refresh_every(&self) -> Duration {
        Duration::from_secs(self.refresh_seconds)
    }

    /// Whether to ask Personalize at all.
    pub fn uses_personalize(&self) -> bool {
        self.campaign_arn.is_some() || self.ranking_campaign_arn.is_some()
    }
}

/// Filter name → Personalize filter ARN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterMap(pub HashMap<String, String>);

/// Personalize's own ARN pattern: `arn:<partition>:personalize:<region>:<account>:<resource>`.
fn parse_arn(raw: &str) -> Result<String, String> {
    let parts: Vec<&str> = raw.splitn(6, ':').collect();
    let ok = raw.len() <= 256
        && parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "personalize"
        && !parts[5].is_empty();
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!("{raw:?} is not a Personalize ARN (arn:aws:personalize:REGION:ACCOUNT:campaign/NAME)"))
    }
}

fn parse_filters(raw: &str) -> Result<FilterMap, String> {
    let mut filters = HashMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, arn) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not name=arn"))?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("filter name {name:?} must be letters, digits, '-' or '_'"));
        }
        if filters.insert(name.to_owned(), parse_arn(arn.trim())?).is_some() {
            return Err(format!("filter {name:?} is configured twice"));
        }
    }
    Ok(FilterMap(filters))
}

fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim().trim_end_matches('/');
    let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
        && !origin.contains(char::is_whitespace)
        && origin.splitn(4, '/').count() == 3;
    if ok {
        Ok(origin.to_owned())
    } else {
        Err(format!("{raw:?} is not an origin like https://app.example.edu"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ranking-api").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_need_nothing() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.config.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(cli.config.personalize_timeout(), Duration::from_millis(300));
        assert!(!cli.config.uses_personalize());
        assert_eq!(cli.config.model_sync_timeout(), crate::backends::embedded::DEFAULT_SYNC_TIMEOUT);
    }

    #[test]
    fn the_model_sync_deadline_is_bounded() {
        let cli = parse(&["--model-sync-timeout-ms", "250"]).unwrap();
        assert_eq!(cli.config.model_sync_timeout(), Duration::from_millis(250));
        for bad in ["0", "99", "120001", "soon"] {
            assert!(parse(&["--model-sync-timeout-ms", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let err = parse(&["--campaign-arn", "campaign-1"]).unwrap_err().to_string();
        assert!(err.contains("is not a Personalize ARN"), "{err}");
        let err = parse(&["--filters", "unseen"]).unwrap_err().to_string();
        assert!(err.contains("is not name=arn"), "{err}");
        let err = parse(&["--cors-origins", "app.example.edu"]).unwrap_err().to_string();
        assert!(err.contains("is not an origin"), "{err}");
        let err = parse(&["--personalize-timeout-ms", "0"]).unwrap_err().to_string();
        assert!(err.contains("0"), "{err}");
    }

    #[test]
    fn filters_and_origins_parse() {
        let cli = parse(&[
            "--filters",
            "unseen=arn:aws:personalize:ap-southeast-1:123456789012:filter/unseen, by-subject=arn:aws:personalize:ap-southeast-1:123456789012:filter/s",
            "--cors-origins",
            "https://app.example.edu/,http://localhost:5173",
        ])
        .unwrap();
        assert_eq!(cli.config.filters.0.len(), 2);
        assert_eq!(cli.config.cors_origins, ["https://app.example.edu", "http://localhost:5173"]);
    }
}
