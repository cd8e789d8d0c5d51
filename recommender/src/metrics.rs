//! Ranking metrics with binary relevance, per user. `ranked` is the model's list, best first;
//! `relevant_count` is how many test items the user has.

/// Share of the user's test items found in the top `k`.
pub fn recall_at_k(
    ranked: &[u32],
    relevant_count: usize,
    k: usize,
    is_relevant: impl Fn(&u32) -> bool,
) -> f64 {
    if relevant_count == 0 {
        return 0.0;
    }
    hits(ranked, k, is_relevant) as f64 / relevant_count as f64
}

/// Share of the top `k` slots holding a test item (always out of `k`, even if fewer were ranked).
pub fn precision_at_k(ranked: &[u32], k: usize, is_relevant: impl Fn(&u32) -> bool) -> f64 {
    if k == 0 {
        return 0.0;
    }
    hits(ranked, k, is_relevant) as f64 / k as f64
}

/// DCG of the top `k` (a hit at rank r, from 1, is worth 1 / log2(r + 1)) over the best DCG
/// possible with `relevant_count` test items.
pub fn ndcg_at_k(ranked: &[u32], relevant_count: usize, k: usize, is_relevant: impl Fn(&u32) -> bool) -> f64 {
    let ideal: f64 = (0..relevant_count.min(k)).map(discount).sum();
    if ideal == 0.0 {
        return 0.0;
    }
    let dcg: f64 =
        ranked.iter().take(k).enumerate().filter(|(_, i)| is_relevant(i)).map(|(r, _)| discount(r)).sum();
    dcg / ideal
}

fn hits(ranked: &[u32], k: usize, is_relevant: impl Fn(&u32) -> bool) -> usize {
    ranked.iter().take(k).filter(|i| is_relevant(i)).count()
}

/// Gain of a hit at zero-based position `r`.
fn discount(r: usize) -> f64 {
    1.0 / ((r + 2) as f64).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(set: &'static [u32]) -> impl Fn(&u32) -> bool {
        move |i| set.contains(i)
    }

    #[test]
    fn hand_computed_case() {
        // Ranked list 5, 1, 7, 3; the user's test items are 1, 3 and 9.
        let ranked = [5, 1, 7, 3];
        let relevant = within(&[1, 3, 9]);
        // Two of three test items in the top 4; one in the top 2.
        assert_eq!(recall_at_k(&ranked, 3, 4, &relevant), 2.0 / 3.0);
        assert_eq!(recall_at_k(&ranked, 3, 2, &relevant), 1.0 / 3.0);
        assert_eq!(precision_at_k(&ranked, 4, &relevant), 0.5);
        // Precision divides by k even when the list is shorter.
        assert_eq!(precision_at_k(&ranked, 10, &relevant), 0.2);
        // DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068; IDCG (3 items) = 1 + 0.63093 + 0.5.
        let expected = (1.0 / 3f64.log2() + 1.0 / 5f64.log2()) / (1.0 + 1.0 / 3f64.log2() + 0.5);
        assert!((ndcg_at_k(&ranked, 3, 4, &relevant) - expected).abs() < 1e-12);
        assert!((ndcg_at_k(&ranked, 3, 4, &relevant) - 0.498189).abs() < 1e-6);
    }

    #[test]
    fn perfect_and_empty_rankings() {
        assert_eq!(ndcg_at_k(&[1, 3], 2, 10, within(&[1, 3])), 1.0);
        // Only one slot, and more test items than slots: the ideal is capped at k.
        assert_eq!(ndcg_at_k(&[1], 5, 1, within(&[1, 2, 3, 4, 5])), 1.0);
        assert_eq!(ndcg_at_k(&[], 2, 10, within(&[1, 3])), 0.0);
        assert_eq!(recall_at_k(&[4], 0, 10, within(&[])), 0.0);
    }
}
