//! Synthetic interactions for benchmarks and tests at sizes no public file here has (10,000
//! items): users belong to taste groups, take most classes from their group and the rest from a
//! long-tailed global popularity, over a year of timestamps.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::input::InteractionRow;

#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub users: usize,
    pub items: usize,
    pub groups: usize,
    /// Interactions per user are drawn uniformly from this range.
    pub min_per_user: usize,
    pub max_per_user: usize,
    /// Chance that an interaction comes from the user's own group.
    pub in_group: f64,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            users: 20_000,
            items: 10_000,
            groups: 50,
            min_per_user: 5,
            max_per_user: 60,
            in_group: 0.7,
            seed: 7,
        }
    }
}

/// Draws from a Zipf-like law over `0..n` (weight of rank r is 1 / (r + 1)^0.9).
struct LongTail {
    cumulative: Vec<f64>,
}

impl LongTail {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(0.9);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&0.0);
        let x = rng.random::<f64>() * total;
        self.cumulative.partition_point(|&c| c < x).min(self.cumulative.len().saturating_sub(1))
    }
}

pub fn generate(spec: &SyntheticSpec) -> Vec<InteractionRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let groups = spec.groups.clamp(1, spec.items.max(1));
    let per_group = spec.items.div_ceil(groups);
    let global = LongTail::new(spec.items);
    let within = LongTail::new(per_group);
    let start = 1_735_689_600; // 2025-01-01
    let mut rows = Vec::new();
    for u in 0..spec.users {
        let group = rng.random_range(0..groups);
        let n = rng.random_range(spec.min_per_user..=spec.max_per_user.max(spec.min_per_user));
        for _ in 0..n {
            let item = if rng.random::<f64>() < spec.in_group {
                (group * per_group + within.draw(&mut rng)).min(spec.items - 1)
            } else {
                global.draw(&mut rng)
            };
            let event_type = if rng.random::<f64>() < 0.8 { "enrolled" } else { "submitAssignment" };
            rows.push(InteractionRow {
                user_id: format!("student-{u}"),
                item_id: format!("class-{item}"),
                timestamp: start + rng.random_range(0..365 * 86_400),
                event_type: event_type.into(),
                event_value: None,
            });
        }
    }
    rows
}
