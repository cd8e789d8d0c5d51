//! Sparse EASE: EASE's regression, each item rebuilt from its `neighbours` most similar items
//! only. For item `j` with neighbourhood `N` (the items of highest cosine with `j`, `j` excluded),
//! `B[N][j] = (G[N][N] + λI)⁻¹ G[N][j]` with `G = XᵀX`: the ridge regression EASE solves over all
//! items at once, restricted to `N`, so no items × items matrix is ever formed. Memory grows with
//! the nonzeros of `G` (kept sparse, row by row) and items × neighbours, not items²: the model for
//! catalogs past dense EASE's memory line. On MovieLens-100k, 200 neighbours come within 1 % of
//! dense EASE's NDCG@10 (BENCHMARKS.md). The weights are served as item-kNN's are.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

use super::knn::{SparseItemItem, transpose};
use crate::data::Dataset;
use crate::topn;

/// Bytes per stored nonzero of the Gram matrix (u32 index, f32 value).
const GRAM_ENTRY_BYTES: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum SparseEaseError {
    #[error(
        "sparse-ease: the item co-occurrences of {items} items need more than {needed_mib} MiB, over the \
         memory budget of {budget_mib} MiB"
    )]
    OverMemoryBudget { items: usize, needed_mib: u64, budget_mib: u64 },
    #[error("sparse-ease: the regularised neighbourhood system of item {item} is not positive definite")]
    NotPositiveDefinite { item: usize },
}

/// Peak bytes besides the Gram matrix: neighbourhoods and weights (twice, for the transpose) and
/// one dense neighbourhood system per thread.
pub(crate) fn bytes_besides_gram(items: usize, neighbours: usize, threads: usize) -> u64 {
    let m = neighbours.min(items.saturating_sub(1)) as u64;
    items as u64 * m * 16 + threads as u64 * m * m * 8 + items as u64 * 8
}

/// The Gram matrix XᵀX in CSR form, every row sorted by item; the diagonal apart.
struct Gram {
    ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
    diag: Vec<f64>,
}

impl Gram {
    fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let r = self.ptr[i]..self.ptr[i + 1];
        (&self.idx[r.clone()], &self.val[r])
    }
}

pub(crate) fn fit(
    data: &Dataset,
    lambda: f64,
    neighbours: usize,
    threads: usize,
    budget_bytes: u64,
) -> Result<SparseItemItem, SparseEaseError> {
    let n = data.n_items();
    let threads = threads.max(1);
    let fixed = bytes_besides_gram(n, neighbours, threads);
    let over = |needed: u64| SparseEaseError::OverMemoryBudget {
        items: n,
        needed_mib: needed >> 20,
        budget_mib: budget_bytes >> 20,
    };
    if fixed > budget_bytes {
        return Err(over(fixed));
    }
    let by_item = data.transpose();
    // Gram rows and neighbourhoods in one pass over the co-occurrences (as item-knn's).
    let mut gram = Gram { ptr: vec![0], idx: Vec::new(), val: Vec::new(), diag: vec![0.0; n] };
    let mut overlap = vec![0f32; n];
    let mut touched: Vec<u32> = Vec::new();
    for j in 0..n {
        let col = by_item.item(j);
        for (&u, &wu) in col.idx.iter().zip(col.weights) {
            let row = data.user(u as usize);
            for (&h, &wh) in row.idx.iter().zip(row.weights) {
                if overlap[h as usize] == 0.0 {
                    touched.push(h);
                }
                overlap[h as usize] += wu * wh;
            }
        }
        touched.sort_unstable();
        for &h in &touched {
            if h as usize == j {
                gram.diag[j] = f64::from(overlap[j]);
            } else {
                gram.idx.push(h);
                gram.val.push(overlap[h as usize]);
            }
            overlap[h as usize] = 0.0;
        }
        touched.clear();
        gram.ptr.push(gram.idx.len());
        let needed = fixed + gram.idx.len() as u64 * GRAM_ENTRY_BYTES;
        if needed > budget_bytes {
            return Err(over(needed));
        }
    }
    let hoods: Vec<Vec<u32>> = (0..n).map(|j| neighbourhood(&gram, j, neighbours)).collect();

    // Each item's system is independent: the items are dealt to the threads round-robin, so the
    // result does not depend on how many there are.
    let mut weights: Vec<Vec<f32>> = vec![Vec::new(); n];
    let results: Vec<Result<Solved, SparseEaseError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (gram, hoods) = (&gram, &hoods);
                scope.spawn(move || {
                    (t..n).step_by(threads).map(|j| Ok((j, solve(gram, &hoods[j], j, lambda)?))).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a sparse-ease worker panicked")).collect()
    });
    for part in results {
        for (j, w) in part? {
            weights[j] = w;
        }
    }
    // Per candidate j: (neighbour, weight) rows; served transposed, as item-knn's.
    let mut by_candidate = SparseItemItem { ptr: vec![0], idx: Vec::new(), val: Vec::new() };
    for (hood, w) in hoods.iter().zip(&weights) {
        by_candidate.idx.extend_from_slice(hood);
        by_candidate.val.extend_from_slice(w);
        by_candidate.ptr.push(by_candidate.idx.len() as u32);
    }
    Ok(transpose(&by_candidate, n))
}

/// One thread's share: (item, its neighbours' weights).
type Solved = Vec<(usize, Vec<f32>)>;

/// The `k` items of highest cosine with `j` among those it co-occurs with, sorted by item.
fn neighbourhood(gram: &Gram, j: usize, k: usize) -> Vec<u32> {
    let (idx, val) = gram.row(j);
    let mut best = topn::TopN::new(k);
    for (&h, &g) in idx.iter().zip(val) {
        let denominator = (gram.diag[j] * gram.diag[h as usize]).sqrt();
        if denominator > 0.0 {
            best.offer((f64::from(g) / denominator) as f32, h);
        }
    }
    let mut hood: Vec<u32> = best.into_sorted().into_iter().map(|(h, _)| h).collect();
    hood.sort_unstable();
    hood
}

/// `(G[N][N] + λI)⁻¹ G[N][j]` for the neighbourhood `hood` of `j`.
fn solve(gram: &Gram, hood: &[u32], j: usize, lambda: f64) -> Result<Vec<f32>, SparseEaseError> {
    let m = hood.len();
    if m == 0 {
        return Ok(Vec::new());
    }
    let mut system = Mat::<f64>::zeros(m, m);
    let mut rhs = Mat::<f64>::zeros(m, 1);
    for (a, &i) in hood.iter().enumerate() {
        system[(a, a)] = gram.diag[i as usize] + lambda;
        // Both lists are sorted: one merge finds every G[i][h] with h in the neighbourhood.
        let (idx, val) = gram.row(i as usize);
        let (mut p, mut b) = (0, 0);
        while p < idx.len() && b < m {
            match idx[p].cmp(&hood[b]) {
                std::cmp::Ordering::Less => p += 1,
                std::cmp::Ordering::Greater => b += 1,
                std::cmp::Ordering::Equal => {
                    system[(a, b)] = f64::from(val[p]);
                    p += 1;
                    b += 1;
                }
            }
        }
        if let Ok(p) = idx.binary_search(&(j as u32)) {
            rhs[(a, 0)] = f64::from(val[p]);
        }
    }
    let llt = system.llt(Side::Lower).map_err(|_| SparseEaseError::NotPositiveDefinite { item: j })?;
    let x = llt.solve(&rhs);
    Ok((0..m).map(|a| x[(a, 0)] as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(events: &[(&str, &str)]) -> Dataset {
        Dataset::from_events(events.iter().map(|(u, i)| (u.to_string(), i.to_string(), 1.0, 0)))
    }

    /// Dense EASE's regression for one column, without the zero-diagonal constraint: item j from
    /// all the others, by Gaussian elimination on the normal equations.
    fn full_regression(data: &Dataset, j: usize, lambda: f64) -> Vec<f64> {
        let n = data.n_items();
        let others: Vec<usize> = (0..n).filter(|&i| i != j).collect();
        let x: Vec<Vec<f64>> = (0..data.n_users())
            .map(|u| {
                let mut row = vec![0.0; n];
                for &i in data.user(u).idx {
                    row[i as usize] = 1.0;
                }
                row
            })
            .collect();
        let m = others.len();
        let mut a = vec![vec![0.0; m + 1]; m];
        for (r, &p) in others.iter().enumerate() {
            for (c, &q) in others.iter().enumerate() {
                a[r][c] =
                    x.iter().map(|row| row[p] * row[q]).sum::<f64>() + if r == c { lambda } else { 0.0 };
            }
            a[r][m] = x.iter().map(|row| row[p] * row[j]).sum();
        }
        for col in 0..m {
            let pivot_row = a[col].clone();
            for (r, row) in a.iter_mut().enumerate() {
                if r != col {
                    let f = row[col] / pivot_row[col];
                    for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                        *x -= f * p;
                    }
                }
            }
        }
        (0..m).map(|r| a[r][m] / a[r][r]).collect()
    }

    /// 30 users over 9 items, and one who took them all (so every pair of items co-occurs).
    fn events() -> Vec<(String, String)> {
        let mut events: Vec<(String, String)> =
            (0..9).map(|i| ("all".to_string(), format!("i{i}"))).collect();
        for u in 0..30 {
            for k in 0..(2 + u % 4) {
                events.push((format!("u{u}"), format!("i{}", (u * 5 + k * 3) % 9)));
            }
        }
        events
    }

    #[test]
    fn with_every_item_as_neighbour_it_is_the_full_ridge_regression() {
        let owned = events();
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(u, i)| (u.as_str(), i.as_str())).collect();
        let data = dataset(&pairs);
        let n = data.n_items();
        let model = fit(&data, 2.0, n, 2, 1 << 30).unwrap();
        for j in 0..n {
            let expected = full_regression(&data, j, 2.0);
            let others: Vec<usize> = (0..n).filter(|&i| i != j).collect();
            for (e, &i) in expected.iter().zip(&others) {
                // Row i of the served layout holds candidate j when i is in j's neighbourhood:
                // here every other item, since every pair co-occurs.
                let (idx, val) = model.row(i);
                let got = idx.iter().position(|&c| c as usize == j).map_or(0.0, |p| f64::from(val[p]));
                assert!((got - e).abs() < 1e-4, "B[{i}][{j}] = {got}, full regression {e}");
            }
        }
    }

    #[test]
    fn the_same_data_gives_the_same_weights_on_any_number_of_threads() {
        let owned = events();
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(u, i)| (u.as_str(), i.as_str())).collect();
        let data = dataset(&pairs);
        let one = fit(&data, 5.0, 3, 1, 1 << 30).unwrap();
        assert_eq!(one, fit(&data, 5.0, 3, 2, 1 << 30).unwrap());
        assert_eq!(one, fit(&data, 5.0, 3, 7, 1 << 30).unwrap());
        // Three neighbours per candidate, at most: the memory is items × neighbours.
        assert!(one.idx.len() <= 3 * data.n_items());
    }

    #[test]
    fn a_budget_too_small_for_the_co_occurrences_is_refused_with_the_figure() {
        let owned = events();
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(u, i)| (u.as_str(), i.as_str())).collect();
        let data = dataset(&pairs);
        let fixed = bytes_besides_gram(data.n_items(), 3, 1);
        let err = fit(&data, 5.0, 3, 1, fixed + 8).unwrap_err();
        assert!(matches!(err, SparseEaseError::OverMemoryBudget { items: 9, .. }), "{err}");
        assert!(err.to_string().contains("over the memory budget"), "{err}");
    }
}
