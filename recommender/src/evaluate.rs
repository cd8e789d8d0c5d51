//! The offline protocols of `recommender evaluate`: every interaction is implicit positive feedback
//! (deduplicated per user and item); each user's items are split 80/20, at random from the seed
//! ([`Protocol::Random`], the literature's) or by time, the latest 20 % held out
//! ([`Protocol::Temporal`], what a nightly retrain faces: tomorrow's interactions from today's
//! model); each model ranks all items except the user's training items; Recall@k = hits / test
//! items, Precision@k = hits / k, NDCG@k with binary relevance, averaged over users with a test item.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::input::InteractionRow;
use crate::metrics;
use crate::model::ModelSpec;
use crate::train::{TrainConfig, TrainError, train};

/// Training rows and, per user, the held-out test items.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Vec<InteractionRow>,
    pub test: BTreeMap<String, Vec<String>>,
}

/// How each user's test items are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A seeded random `test_fraction` of the user's items.
    Random,
    /// The user's latest `test_fraction` of items (by their latest timestamp, ties by item id).
    Temporal,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Random => "random",
            Protocol::Temporal => "temporal",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Protocol::Random),
            "temporal" => Ok(Protocol::Temporal),
            other => Err(format!("unknown protocol {other:?}: random or temporal")),
        }
    }
}

/// Deduplicates to one row per (user, item) (latest timestamp), then for each user, in id order,
/// holds out `round(test_fraction × n)` of the user's items: with [`Protocol::Random`], the first
/// ones after a shuffle (items sorted by id first) by one ChaCha8 stream seeded by `seed`; with
/// [`Protocol::Temporal`], the latest ones.
pub fn split(
    rows: impl IntoIterator<Item = InteractionRow>,
    protocol: Protocol,
    seed: u64,
    test_fraction: f64,
) -> Split {
    let mut latest: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in rows {
        let t = latest.entry(r.user_id).or_default().entry(r.item_id).or_insert(r.timestamp);
        *t = (*t).max(r.timestamp);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Split { train: Vec::new(), test: BTreeMap::new() };
    for (user, items) in latest {
        let mut order: Vec<(String, i64)> = items.into_iter().collect();
        match protocol {
            Protocol::Random => order.shuffle(&mut rng),
            // Latest first; the id breaks ties so the split never depends on row order.
            Protocol::Temporal => order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0))),
        }
        let n_test = ((order.len() as f64) * test_fraction).round() as usize;
        let (test, train) = order.split_at(n_test);
        if !test.is_empty() {
            out.test.insert(user.clone(), test.iter().map(|(i, _)| i.clone()).collect());
        }
        for (item, timestamp) in train {
            out.train.push(InteractionRow {
                user_id: user.clone(),
                item_id: item.clone(),
                timestamp: *timestamp,
                event_type: "interaction".into(),
                event_value: None,
            });
        }
    }
    out
}

impl Split {
    /// Writes `train.csv` (a Personalize interactions CSV) and `test.csv` (USER_ID,ITEM_ID) so that other
    /// tools (the benchmark's Python baselines) evaluate on exactly this split.
    pub fn dump(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut train = std::io::BufWriter::new(std::fs::File::create(dir.join("train.csv"))?);
        writeln!(train, "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE")?;
        for r in &self.train {
            writeln!(train, "{},{},{},{}", r.user_id, r.item_id, r.timestamp, r.event_type)?;
        }
        train.flush()?;
        let mut test = std::io::BufWriter::new(std::fs::File::create(dir.join("test.csv"))?);
        writeln!(test, "USER_ID,ITEM_ID")?;
        for (user, items) in &self.test {
            for item in items {
                writeln!(test, "{user},{item}")?;
            }
        }
        test.flush()
    }
}

/// One model's figures at `k` (and Recall at `2k`).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub model: String,
    /// For `auto`: the model the validation chose.
    pub chosen: Option<String>,
    pub k: usize,
    pub recall_at_k: f64,
    pub recall_at_2k: f64,
    pub ndcg_at_k: f64,
    pub precision_at_k: f64,
    pub fit_seconds: f64,
    /// The process's peak resident memory during the fit, in MiB (Linux: the high-water mark is
    /// reset before the fit and read after it; `None` where that is not possible). It includes
    /// what the process held before, the split among it.
    pub fit_peak_rss_mib: Option<f64>,
    /// Users with at least one test item: the ones averaged over.
    pub users: usize,
}

impl Evaluation {
    /// One line of `evaluate --json`: `{"model", "recall@10", "recall@20", "ndcg@10", "precision@10",
    /// "fit_seconds"}` for k = 10.
    pub fn to_json(&self) -> serde_json::Value {
        let k = self.k;
        let mut m = serde_json::Map::new();
        m.insert("model".into(), self.model.clone().into());
        if let Some(c) = &self.chosen {
            m.insert("chosen".into(), c.clone().into());
        }
        m.insert(format!("recall@{k}"), self.recall_at_k.into());
        m.insert(format!("recall@{}", 2 * k), self.recall_at_2k.into());
        m.insert(format!("ndcg@{k}"), self.ndcg_at_k.into());
        m.insert(format!("precision@{k}"), self.precision_at_k.into());
        m.insert("fit_seconds".into(), self.fit_seconds.into());
        if let Some(peak) = self.fit_peak_rss_mib {
            m.insert("fit_peak_rss_mib".into(), peak.into());
        }
        m.insert("users".into(), self.users.into());
        serde_json::Value::Object(m)
    }
}

/// What to evaluate: a fixed model, or `None` for the automatic choice.
pub fn evaluate(
    split: &Split,
    spec: Option<&ModelSpec>,
    base: &TrainConfig,
    k: usize,
) -> Result<Evaluation, TrainError> {
    // The protocol treats every interaction alike, whatever its event type.
    let config = TrainConfig {
        model: spec.cloned(),
        event_weights: BTreeMap::new(),
        default_event_weight: 1.0,
        min_event_value: None,
        ..base.clone()
    };
    let peak_reset = reset_peak_rss();
    let started = Instant::now();
    let model = train(split.train.iter().cloned(), &config)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let fit_peak_rss_mib = if peak_reset { peak_rss_mib() } else { None };

    let (mut recall_k, mut recall_2k, mut ndcg_k, mut precision_k, mut users) = (0.0, 0.0, 0.0, 0.0, 0);
    for (user, items) in &split.test {
        let relevant: HashSet<u32> = items.iter().filter_map(|i| model.item_position(i)).collect();
        // Test items the model never saw still count in the denominator: they are misses.
        let relevant_count = items.len();
        let ranked = model.rank_for_evaluation(user, 2 * k).unwrap_or_else(|| {
            model.popular(2 * k).iter().filter_map(|(id, _)| model.item_position(id)).collect()
        });
        let is_relevant = |i: &u32| relevant.contains(i);
        recall_k += metrics::recall_at_k(&ranked, relevant_count, k, is_relevant);
        recall_2k += metrics::recall_at_k(&ranked, relevant_count, 2 * k, is_relevant);
        ndcg_k += metrics::ndcg_at_k(&ranked, relevant_count, k, is_relevant);
        precision_k += metrics::precision_at_k(&ranked, k, is_relevant);
        users += 1;
    }
    let mean = |x: f64| if users == 0 { 0.0 } else { x / users as f64 };
    Ok(Evaluation {
        model: spec.map_or("auto", ModelSpec::name).to_owned(),
        chosen: spec.is_none().then(|| model.info().model.clone()),
        k,
        recall_at_k: mean(recall_k),
        recall_at_2k: mean(recall_2k),
        ndcg_at_k: mean(ndcg_k),
        precision_at_k: mean(precision_k),
        fit_seconds,
        fit_peak_rss_mib,
        users,
    })
}

/// Resets the kernel's high-water mark of this process's resident memory (Linux ≥ 4.0: writing 5
/// to `/proc/self/clear_refs`); false where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `VmHWM` of `/proc/self/status`, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// The fixed-setting models `evaluate` reports besides `auto`: each with the defaults of `config`.
pub fn default_specs(config: &TrainConfig) -> Vec<ModelSpec> {
    let lambda = config.ease_lambdas.get(config.ease_lambdas.len() / 2).copied().unwrap_or(300.0);
    let ease_weight =
        config.blend_ease_weights.get(config.blend_ease_weights.len() / 2).copied().unwrap_or(0.5);
    vec![
        ModelSpec::Popularity { half_life_days: config.popularity_half_life_days },
        ModelSpec::ItemKnn { neighbours: config.knn_neighbours, shrink: config.knn_shrink },
        ModelSpec::Ease { lambda },
        ModelSpec::SparseEase { lambda, neighbours: config.sparse_ease_neighbours },
        ModelSpec::Ials(config.ials.clone()),
        ModelSpec::EaseIals { lambda, ials: config.ials.clone(), ease_weight },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<InteractionRow> {
        let mut rows = Vec::new();
        for u in 0..20 {
            for i in 0..(5 + u % 7) {
                rows.push(InteractionRow {
                    user_id: format!("u{u}"),
                    item_id: format!("i{}", (u * 3 + i) % 17),
                    timestamp: i as i64,
                    event_type: "enrolled".into(),
                    event_value: None,
                });
            }
        }
        rows
    }

    #[test]
    fn split_is_seeded_and_holds_out_a_fifth_of_each_user() {
        let a = split(rows(), Protocol::Random, 42, 0.2);
        let b = split(rows(), Protocol::Random, 42, 0.2);
        let c = split(rows(), Protocol::Random, 43, 0.2);
        assert_eq!(a.test, b.test);
        assert_ne!(a.test, c.test);
        // u0 has 5 distinct items: 1 test, 4 train, and never both.
        assert_eq!(a.test["u0"].len(), 1);
        let train_u0: Vec<&str> =
            a.train.iter().filter(|r| r.user_id == "u0").map(|r| r.item_id.as_str()).collect();
        assert_eq!(train_u0.len(), 4);
        assert!(!train_u0.contains(&a.test["u0"][0].as_str()));
    }

    #[test]
    fn the_temporal_split_holds_out_each_users_latest_fifth_whatever_the_row_order() {
        let mut shuffled = rows();
        shuffled.reverse();
        let a = split(rows(), Protocol::Temporal, 42, 0.2);
        assert_eq!(a.test, split(shuffled, Protocol::Temporal, 7, 0.2).test, "no seed, no row order");
        // u6 has 11 items at times 0..11: the latest two are held out, the rest trained on.
        let u6_items = |t: i64| format!("i{}", (6 * 3 + t) % 17);
        let mut held = a.test["u6"].clone();
        held.sort();
        let mut expected = vec![u6_items(10), u6_items(9)];
        expected.sort();
        assert_eq!(held, expected);
        let latest_train = a.train.iter().filter(|r| r.user_id == "u6").map(|r| r.timestamp).max();
        assert_eq!(latest_train, Some(8));
        // A tie on time goes by item id, the largest held out: never by the input's order.
        let tied: Vec<InteractionRow> = ["b", "a", "c", "d", "e"]
            .iter()
            .map(|i| InteractionRow {
                user_id: "t".into(),
                item_id: i.to_string(),
                timestamp: 5,
                event_type: "enrolled".into(),
                event_value: None,
            })
            .collect();
        assert_eq!(split(tied, Protocol::Temporal, 42, 0.2).test["t"], ["e"]);
    }

    #[test]
    fn protocols_parse_by_name_and_refuse_others() {
        assert_eq!("temporal".parse::<Protocol>(), Ok(Protocol::Temporal));
        assert_eq!("random".parse::<Protocol>().map(Protocol::name), Ok("random"));
        assert!("latest".parse::<Protocol>().unwrap_err().contains("random or temporal"));
    }
}
