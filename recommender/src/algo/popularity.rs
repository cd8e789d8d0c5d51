//! Popularity with recency: each interaction counts its weight, halved every `half_life_days`
//! before the newest interaction in the data, so a class that was busy last year does not
//! outrank one that is busy now.

use crate::data::Dataset;

pub(crate) fn fit(data: &Dataset, half_life_days: Option<f64>) -> Vec<f32> {
    let mut scores = vec![0f64; data.n_items()];
    let newest = data.time_range().map_or(0, |(_, max)| max);
    let decay_per_second =
        half_life_days.filter(|d| *d > 0.0).map(|d| std::f64::consts::LN_2 / (d * 86_400.0));
    for e in 0..data.n_entries() {
        let age = (newest - data.times[e]).max(0) as f64;
        let decay = decay_per_second.map_or(1.0, |k| (-k * age).exp());
        scores[data.items[e] as usize] += f64::from(data.weights[e]) * decay;
    }
    scores.into_iter().map(|s| s as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_interactions_count_more() {
        let day = 86_400;
        let data = Dataset::from_events([
            ("u1".into(), "old".into(), 1.0, 0),
            ("u2".into(), "old".into(), 1.0, 0),
            ("u3".into(), "new".into(), 1.0, 20 * day),
        ]);
        // Without decay "old" has two interactions against one.
        assert_eq!(fit(&data, None), [1.0, 2.0]);
        // With a 10-day half-life each "old" one is worth 1/4: 0.5 in all.
        let decayed = fit(&data, Some(10.0));
        assert!((decayed[0] - 1.0).abs() < 1e-6);
        assert!((decayed[1] - 0.5).abs() < 1e-6);
    }
}
