//! Implicit ALS (Hu, Koren & Volinsky, 2008) solved with a few conjugate-gradient steps per row, as
//! the `implicit` library does: observed pairs have confidence `alpha × weight`, every other pair
//! confidence 1 towards zero. Memory is linear in users + items.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::vector::{axpy, dot, with_simd};
use crate::data::{Dataset, Row};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IalsParams {
    pub factors: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub iterations: usize,
    pub cg_steps: usize,
}

impl Default for IalsParams {
    /// The settings the benchmark gives `implicit`, so the two are compared like for like.
    fn default() -> Self {
        Self { factors: 64, regularization: 20.0, alpha: 2.0, iterations: 15, cg_steps: 3 }
    }
}

/// User and item factors, row-major (`dim` floats per row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Factors {
    pub dim: usize,
    pub users: Vec<f32>,
    pub items: Vec<f32>,
}

pub(crate) fn fit(data: &Dataset, params: &IalsParams, seed: u64, threads: usize) -> Factors {
    let dim = params.factors.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut init =
        |rows: usize| -> Vec<f32> { (0..rows * dim).map(|_| rng.random::<f32>() * 0.01).collect() };
    let mut users = init(data.n_users());
    let mut items = init(data.n_items());
    let by_item = data.transpose();
    for _ in 0..params.iterations {
        solve_side(&mut users, &items, dim, params, threads, |u| data.user(u));
        solve_side(&mut items, &users, dim, params, threads, |i| by_item.item(i));
    }
    Factors { dim, users, items }
}

/// Updates every row of `x` given the fixed `y`. Rows are independent, so they are split into
/// contiguous chunks across threads; the result does not depend on the number of threads.
fn solve_side<'a>(
    x: &mut [f32],
    y: &[f32],
    dim: usize,
    params: &IalsParams,
    threads: usize,
    row_of: impl Fn(usize) -> Row<'a> + Sync,
) {
    let yty = gram(y, dim, params.regularization);
    let rows = x.len() / dim;
    let threads = threads.clamp(1, rows.max(1));
    let per_thread = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk_no, chunk) in x.chunks_mut(per_thread * dim).enumerate() {
            let (yty, row_of) = (&yty, &row_of);
            s.spawn(move || {
                let mut scratch = Scratch::new(dim);
                with_simd(|| {
                    for (k, xu) in chunk.chunks_exact_mut(dim).enumerate() {
                        let row = row_of(chunk_no * per_thread + k);
                        conjugate_gradient(xu, y, yty, row, params, &mut scratch);
                    }
                });
            });
        }
    });
}

/// `YᵀY + λI`, row-major `dim × dim`.
fn gram(y: &[f32], dim: usize, regularization: f32) -> Vec<f32> {
    let mut g = vec![0f32; dim * dim];
    with_simd(|| {
        for row in y.chunks_exact(dim) {
            for (a, &ya) in row.iter().enumerate() {
                axpy(ya, row, &mut g[a * dim..(a + 1) * dim]);
            }
        }
    });
    for a in 0..dim {
        g[a * dim + a] += regularization;
    }
    g
}

struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl Scratch {
    fn new(dim: usize) -> Self {
        Self { r: vec![0.0; dim], p: vec![0.0; dim], ap: vec![0.0; dim] }
    }
}

#[inline(always)]
fn mat_vec(m: &[f32], v: &[f32], out: &mut [f32]) {
    let dim = v.len();
    for (o, row) in out.iter_mut().zip(m.chunks_exact(dim)) {
        *o = dot(row, v);
    }
}

/// A few CG steps on `(YᵀY + λI + Yᵀ(C-I)Y) x = YᵀC·1`, warm-started from the current `x`.
#[inline(always)]
fn conjugate_gradient(
    x: &mut [f32],
    y: &[f32],
    yty: &[f32],
    row: Row<'_>,
    params: &IalsParams,
    s: &mut Scratch,
) {
    let dim = x.len();
    // r = b - A x
    mat_vec(yty, x, &mut s.r);
    s.r.iter_mut().for_each(|v| *v = -*v);
    for (&i, &w) in row.idx.iter().zip(row.weights) {
        let yi = &y[i as usize * dim..(i as usize + 1) * dim];
        let confidence = params.alpha * w;
        axpy(confidence - (confidence - 1.0) * dot(yi, x), yi, &mut s.r);
    }
    s.p.copy_from_slice(&s.r);
    let mut rs_old = dot(&s.r, &s.r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..params.cg_steps {
        mat_vec(yty, &s.p, &mut s.ap);
        for (&i, &w) in row.idx.iter().zip(row.weights) {
            let yi = &y[i as usize * dim..(i as usize + 1) * dim];
            let confidence = params.alpha * w;
            axpy((confidence - 1.0) * dot(yi, &s.p), yi, &mut s.ap);
        }
        let step = rs_old / dot(&s.p, &s.ap);
        axpy(step, &s.p, x);
        axpy(-step, &s.ap, &mut s.r);
        let rs_new = dot(&s.r, &s.r);
        if rs_new < 1e-20 {
            break;
        }
        let beta = rs_new / rs_old;
        for (p, r) in s.p.iter_mut().zip(&s.r) {
            *p = r + beta * *p;
        }
        rs_old = rs_new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_data() -> Dataset {
        // Two communities: u1..u3 take a and b, u4..u6 take c and d.
        let mut events = Vec::new();
        for u in ["u1", "u2", "u3"] {
            events
                .extend([(u.to_string(), "a".to_string(), 1.0, 0), (u.to_string(), "b".to_string(), 1.0, 0)]);
        }
        for u in ["u4", "u5", "u6"] {
            events
                .extend([(u.to_string(), "c".to_string(), 1.0, 0), (u.to_string(), "d".to_string(), 1.0, 0)]);
        }
        Dataset::from_events(events)
    }

    #[test]
    fn learns_the_communities_and_is_independent_of_threads() {
        let params = IalsParams { factors: 4, regularization: 0.1, alpha: 10.0, iterations: 10, cg_steps: 3 };
        let data = block_data();
        let f = fit(&data, &params, 7, 1);
        let score = |u: usize, i: usize| dot(&f.users[u * 4..u * 4 + 4], &f.items[i * 4..i * 4 + 4]);
        // u1 (index 0) should prefer its own community's items (a, b) to the other's (c, d).
        assert!(score(0, 0) > score(0, 2) + 0.3);
        assert!(score(5, 3) > score(5, 1) + 0.3);
        assert_eq!(fit(&data, &params, 7, 2), f);
        assert_ne!(fit(&data, &params, 8, 1), f);
    }
}
