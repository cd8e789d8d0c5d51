//! EASE (Steck, 2019): the item-item weights `B` that best rebuild each user's row from the others,
//! in closed form. With `P = (XᵀX + λI)⁻¹`, `B[i][j] = -P[i][j] / P[j][j]` and a zero diagonal.
//! One dense inverse: fast up to several thousand items, and quadratic in memory, which is why
//! [`bytes_needed`] decides whether it may run.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::{Mat, Par};

use crate::data::Dataset;

/// Peak bytes of [`fit`] for `items` items: the Cholesky factor, the inverse and faer's scratch
/// copy, all `f64` (24 bytes per cell). The `f32` result (4 per cell) is made after the scratch is
/// freed, so it does not add to the peak.
pub(crate) fn bytes_needed(items: usize) -> u64 {
    24 * (items as u64) * (items as u64)
}

#[derive(Debug, thiserror::Error)]
#[error("the regularised Gram matrix is not positive definite at item {index} (lambda too small?)")]
pub struct NotPositiveDefinite {
    pub index: usize,
}

/// Returns `B` row-major: `weights[i * n + j]` is how much having item `i` says about item `j`.
pub(crate) fn fit(data: &Dataset, lambda: f64, threads: usize) -> Result<Vec<f32>, NotPositiveDefinite> {
    let n = data.n_items();
    if n == 0 {
        return Ok(Vec::new());
    }
    // Gram matrix XᵀX, lower triangle only (the factorisation reads no more). Summing user by user
    // costs the sum of squared history lengths, far below n² × users for sparse data.
    let mut gram = Mat::<f64>::zeros(n, n);
    for u in 0..data.n_users() {
        let row = data.user(u);
        for (a, (&j, &wj)) in row.idx.iter().zip(row.weights).enumerate() {
            let col = gram.col_as_slice_mut(j as usize);
            // Items are sorted, so entries from `a` on are the rows i >= j.
            for (&i, &wi) in row.idx[a..].iter().zip(&row.weights[a..]) {
                col[i as usize] += f64::from(wi) * f64::from(wj);
            }
        }
    }
    for i in 0..n {
        gram[(i, i)] += lambda;
    }

    let par = if threads > 1 { Par::rayon(threads) } else { Par::Seq };
    let mut factor = gram;
    {
        let mut mem =
            MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(n, par, Default::default()));
        llt::factor::cholesky_in_place(
            factor.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .map_err(|llt::factor::LltError::NonPositivePivot { index }| NotPositiveDefinite { index })?;
    }
    // The factorisation leaves the old upper triangle in place; the inverse must see zeros there.
    for j in 1..n {
        factor.col_as_slice_mut(j)[..j].fill(0.0);
    }
    let mut inverse = Mat::<f64>::zeros(n, n);
    {
        let mut mem = MemBuffer::new(llt::inverse::inverse_scratch::<f64>(n, par));
        llt::inverse::inverse(inverse.as_mut(), factor.as_ref(), par, MemStack::new(&mut mem));
    }
    drop(factor);

    // `inverse` holds P in its lower triangle. P is symmetric, so column c below the diagonal
    // gives both P[r][c] and P[c][r].
    let diag: Vec<f64> = (0..n).map(|i| inverse[(i, i)]).collect();
    let mut weights = vec![0f32; n * n];
    for c in 0..n {
        let col = inverse.col_as_slice(c);
        for r in c + 1..n {
            let p = col[r];
            weights[r * n + c] = (-p / diag[c]) as f32;
            weights[c * n + r] = (-p / diag[r]) as f32;
        }
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EASE computed the long way: a dense inverse by Gauss-Jordan, then the closed form.
    fn reference(x: &[Vec<f64>], lambda: f64) -> Vec<Vec<f64>> {
        let n = x[0].len();
        let mut a = vec![vec![0.0; 2 * n]; n];
        for i in 0..n {
            for j in 0..n {
                a[i][j] =
                    x.iter().map(|row| row[i] * row[j]).sum::<f64>() + if i == j { lambda } else { 0.0 };
            }
            a[i][n + i] = 1.0;
        }
        for c in 0..n {
            let pivot = a[c][c];
            for v in a[c].iter_mut() {
                *v /= pivot;
            }
            for r in 0..n {
                if r != c {
                    let f = a[r][c];
                    let pivot_row = a[c].clone();
                    for (v, p) in a[r].iter_mut().zip(pivot_row) {
                        *v -= f * p;
                    }
                }
            }
        }
        (0..n)
            .map(|i| (0..n).map(|j| if i == j { 0.0 } else { -a[i][n + j] / a[j][n + j] }).collect())
            .collect()
    }

    #[test]
    fn matches_the_closed_form() {
        let events =
            [("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c"), ("u4", "a")];
        let data = Dataset::from_events(events.iter().map(|(u, i)| (u.to_string(), i.to_string(), 1.0, 0)));
        let x: Vec<Vec<f64>> = (0..data.n_users())
            .map(|u| {
                let mut row = vec![0.0; data.n_items()];
                for &i in data.user(u).idx {
                    row[i as usize] = 1.0;
                }
                row
            })
            .collect();
        let b = fit(&data, 0.5, 1).unwrap();
        let expected = reference(&x, 0.5);
        let n = data.n_items();
        for i in 0..n {
            for j in 0..n {
                assert!((f64::from(b[i * n + j]) - expected[i][j]).abs() < 1e-5, "B[{i}][{j}]");
            }
        }
    }
}
