//! Implicit ALS (Hu, Koren & Volinsky, 2008) solved with a few conjugate-gradient steps per row, as
//! the `implicit` library does: observed pairs have confidence `alpha × weight`, every other pair
//! confidence 1 towards zero. Memory is linear in users + items.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use pulp::Simd;

use super::vector::{axpy, dispatch, dot};
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
    /// The item factors again, for scoring: blocks of [`BLOCK`] items stored dimension by
    /// dimension (`[block][d][lane]`), so one vector multiply-add serves eight items and no
    /// horizontal sum is needed; and as bfloat16 (the top half of an f32), because scoring
    /// 10,000 items streams the whole table per query and half the bytes is nearly half the
    /// time once it no longer fits the L2 cache. Derived, never stored in the model file.
    pub item_blocks: Vec<u16>,
}

/// Items per block of [`Factors::item_blocks`]: one AVX register of `f32`.
pub(crate) const BLOCK: usize = 8;

/// Rounds to the nearest bfloat16 (ties to even), kept as its 16 bits.
fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// Eight bfloat16 values as one vector of f32 (only called where the vector has eight lanes).
#[inline(always)]
fn widen<V: pulp::bytemuck::AnyBitPattern>(bf16: &[u16]) -> V {
    let wide: [f32; BLOCK] = std::array::from_fn(|l| f32::from_bits(u32::from(bf16[l]) << 16));
    pulp::cast_lossy(wide)
}

impl Factors {
    pub fn new(dim: usize, users: Vec<f32>, items: Vec<f32>) -> Self {
        let n = items.len() / dim.max(1);
        let mut item_blocks = vec![0u16; n.div_ceil(BLOCK) * dim * BLOCK];
        for (i, row) in items.chunks_exact(dim.max(1)).enumerate() {
            let (block, lane) = (i / BLOCK, i % BLOCK);
            for (d, &v) in row.iter().enumerate() {
                item_blocks[(block * dim + d) * BLOCK + lane] = to_bf16(v);
            }
        }
        Self { dim, users, items, item_blocks }
    }

    /// Scores of every item for user `u` into `out` (length = items).
    #[inline(always)]
    pub fn score_user<S: Simd>(&self, simd: S, u: usize, out: &mut [f32]) {
        let dim = self.dim;
        let xu = &self.users[u * dim..(u + 1) * dim];
        if S::F32_LANES == BLOCK {
            // GROUP blocks at a time: independent accumulators hide the multiply-add latency.
            const GROUP: usize = 8;
            let zero = simd.splat_f32s(0.0);
            let row_len = dim * BLOCK;
            for (g, group) in self.item_blocks.chunks(GROUP * row_len).enumerate() {
                let mut acc = [zero; GROUP];
                let blocks = group.len() / row_len;
                if blocks == GROUP {
                    let rows: [&[u16]; GROUP] =
                        std::array::from_fn(|b| &group[b * row_len..(b + 1) * row_len]);
                    for d in 0..dim {
                        let x = simd.splat_f32s(xu[d]);
                        for b in 0..GROUP {
                            acc[b] =
                                simd.mul_add_f32s(x, widen(&rows[b][d * BLOCK..(d + 1) * BLOCK]), acc[b]);
                        }
                    }
                } else {
                    for (b, block) in group.chunks_exact(row_len).enumerate() {
                        for (d, &x) in xu.iter().enumerate() {
                            let y = widen(&block[d * BLOCK..(d + 1) * BLOCK]);
                            acc[b] = simd.mul_add_f32s(simd.splat_f32s(x), y, acc[b]);
                        }
                    }
                }
                for (b, a) in acc.iter().enumerate().take(blocks) {
                    let start = (g * GROUP + b) * BLOCK;
                    let end = (start + BLOCK).min(out.len());
                    simd.partial_store_f32s(&mut out[start..end], *a);
                }
            }
        } else {
            for (o, yi) in out.iter_mut().zip(self.items.chunks_exact(dim)) {
                *o = dot(simd, xu, yi);
            }
        }
    }
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
    Factors::new(dim, users, items)
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
    let yty = dispatch(Gram { y, dim, regularization: params.regularization });
    let rows = x.len() / dim;
    let threads = threads.clamp(1, rows.max(1));
    let per_thread = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk_no, chunk) in x.chunks_mut(per_thread * dim).enumerate() {
            let (yty, row_of) = (&yty, &row_of);
            s.spawn(move || {
                dispatch(SolveRows {
                    x: chunk,
                    first_row: chunk_no * per_thread,
                    y,
                    yty,
                    params,
                    row_of,
                    _rows: std::marker::PhantomData,
                })
            });
        }
    });
}

/// `YᵀY + λI`, row-major `dim × dim`.
struct Gram<'a> {
    y: &'a [f32],
    dim: usize,
    regularization: f32,
}

impl pulp::WithSimd for Gram<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
        let dim = self.dim;
        let mut g = vec![0f32; dim * dim];
        for row in self.y.chunks_exact(dim) {
            for (a, &ya) in row.iter().enumerate() {
                axpy(simd, ya, row, &mut g[a * dim..(a + 1) * dim]);
            }
        }
        for a in 0..dim {
            g[a * dim + a] += self.regularization;
        }
        g
    }
}

/// Solves the rows of one thread's chunk.
struct SolveRows<'a, 'r, F> {
    x: &'a mut [f32],
    first_row: usize,
    y: &'a [f32],
    yty: &'a [f32],
    params: &'a IalsParams,
    row_of: &'a F,
    /// The lifetime of the rows `row_of` hands out (the training data's).
    _rows: std::marker::PhantomData<Row<'r>>,
}

impl<'r, F: Fn(usize) -> Row<'r>> pulp::WithSimd for SolveRows<'_, 'r, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let dim = self.yty.len().isqrt();
        let mut scratch = Scratch::new(dim);
        for (k, xu) in self.x.chunks_exact_mut(dim).enumerate() {
            let row = (self.row_of)(self.first_row + k);
            conjugate_gradient(simd, xu, self.y, self.yty, row, self.params, &mut scratch);
        }
    }
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
fn mat_vec<S: Simd>(simd: S, m: &[f32], v: &[f32], out: &mut [f32]) {
    let dim = v.len();
    for (o, row) in out.iter_mut().zip(m.chunks_exact(dim)) {
        *o = dot(simd, row, v);
    }
}

/// A few CG steps on `(YᵀY + λI + Yᵀ(C-I)Y) x = YᵀC·1`, warm-started from the current `x`.
#[inline(always)]
fn conjugate_gradient<S: Simd>(
    simd: S,
    x: &mut [f32],
    y: &[f32],
    yty: &[f32],
    row: Row<'_>,
    params: &IalsParams,
    s: &mut Scratch,
) {
    let dim = x.len();
    // r = b - A x
    mat_vec(simd, yty, x, &mut s.r);
    s.r.iter_mut().for_each(|v| *v = -*v);
    for (&i, &w) in row.idx.iter().zip(row.weights) {
        let yi = &y[i as usize * dim..(i as usize + 1) * dim];
        let confidence = params.alpha * w;
        axpy(simd, confidence - (confidence - 1.0) * dot(simd, yi, x), yi, &mut s.r);
    }
    s.p.copy_from_slice(&s.r);
    let mut rs_old = dot(simd, &s.r, &s.r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..params.cg_steps {
        mat_vec(simd, yty, &s.p, &mut s.ap);
        for (&i, &w) in row.idx.iter().zip(row.weights) {
            let yi = &y[i as usize * dim..(i as usize + 1) * dim];
            let confidence = params.alpha * w;
            axpy(simd, (confidence - 1.0) * dot(simd, yi, &s.p), yi, &mut s.ap);
        }
        let step = rs_old / dot(simd, &s.p, &s.ap);
        axpy(simd, step, &s.p, x);
        axpy(simd, -step, &s.ap, &mut s.r);
        let rs_new = dot(simd, &s.r, &s.r);
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
    fn bf16_rounds_to_nearest() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between two bfloat16 values: ties go to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32::from_bits(u32::from(to_bf16(-2.5)) << 16), -2.5);
    }

    #[test]
    fn blocked_scores_equal_plain_dot_products() {
        // 83 items: ten full blocks of eight and a partial one; dimension 5 is not a lane multiple.
        let (dim, n_items) = (5, 83);
        let users: Vec<f32> = (0..2 * dim).map(|k| (k as f32 * 0.37).sin()).collect();
        let items: Vec<f32> = (0..n_items * dim).map(|k| (k as f32 * 0.11).cos()).collect();
        let f = Factors::new(dim, users.clone(), items.clone());
        let mut fast = vec![0f32; n_items];
        dispatch(Score { f: &f, out: &mut fast });
        for (i, &got) in fast.iter().enumerate() {
            let expected: f32 = (0..dim).map(|d| users[dim + d] * items[i * dim + d]).sum();
            // Item factors are bfloat16 on the SIMD path: 8 significant bits per factor.
            let magnitude: f32 = (0..dim).map(|d| (users[dim + d] * items[i * dim + d]).abs()).sum();
            assert!((got - expected).abs() <= magnitude / 128.0, "item {i}: {got} vs {expected}");
        }
    }

    struct Score<'a> {
        f: &'a Factors,
        out: &'a mut [f32],
    }

    impl pulp::WithSimd for Score<'_> {
        type Output = ();
        fn with_simd<S: Simd>(self, simd: S) {
            self.f.score_user(simd, 1, self.out);
        }
    }

    #[test]
    fn learns_the_communities_and_is_independent_of_threads() {
        let params = IalsParams { factors: 4, regularization: 0.1, alpha: 10.0, iterations: 10, cg_steps: 3 };
        let data = block_data();
        let f = fit(&data, &params, 7, 1);
        let score = |u: usize, i: usize| -> f32 {
            f.users[u * 4..u * 4 + 4].iter().zip(&f.items[i * 4..i * 4 + 4]).map(|(a, b)| a * b).sum()
        };
        // u1 (index 0) should prefer its own community's items (a, b) to the other's (c, d).
        assert!(score(0, 0) > score(0, 2) + 0.3);
        assert!(score(5, 3) > score(5, 1) + 0.3);
        assert_eq!(fit(&data, &params, 7, 2), f);
        assert_ne!(fit(&data, &params, 8, 1), f);
    }
}
