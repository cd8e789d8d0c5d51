//! Dense-vector kernels with explicit SIMD through `pulp`: the binary targets baseline x86-64, and
//! `pulp` picks AVX2+FMA (or plain SSE, or scalar) at run time. Callers wrap their loops in a
//! [`pulp::WithSimd`] implementation and pass the `simd` token down, so the whole loop is compiled
//! for the chosen instruction set.

use pulp::Simd;

/// Runs a [`pulp::WithSimd`] operation with the best instruction set this CPU has.
#[inline(always)]
pub(crate) fn dispatch<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}

/// The instruction set the scoring kernels run with on this CPU, for benchmark reports.
pub fn simd_level() -> &'static str {
    match pulp::Arch::new() {
        pulp::Arch::Scalar => "scalar",
        _ => "AVX2+FMA",
    }
}

/// `a · b` with four independent accumulators, so additions do not wait on each other.
#[inline(always)]
pub(crate) fn dot<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (a_head, a_tail) = S::as_simd_f32s(a);
    let (b_head, b_tail) = S::as_simd_f32s(b);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    let a4 = a_head.chunks_exact(4);
    let b4 = b_head.chunks_exact(4);
    let (a_rest, b_rest) = (a4.remainder(), b4.remainder());
    for (x, y) in a4.zip(b4) {
        acc[0] = simd.mul_add_f32s(x[0], y[0], acc[0]);
        acc[1] = simd.mul_add_f32s(x[1], y[1], acc[1]);
        acc[2] = simd.mul_add_f32s(x[2], y[2], acc[2]);
        acc[3] = simd.mul_add_f32s(x[3], y[3], acc[3]);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
    }
    let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    let mut total = simd.reduce_sum_f32s(sum);
    for (x, y) in a_tail.iter().zip(b_tail) {
        total += x * y;
    }
    total
}

/// `y += alpha * x`
#[inline(always)]
pub(crate) fn axpy<S: Simd>(simd: S, alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    let (y_head, y_tail) = S::as_mut_simd_f32s(y);
    let (x_head, x_tail) = S::as_simd_f32s(x);
    let a = simd.splat_f32s(alpha);
    for (y, x) in y_head.iter_mut().zip(x_head) {
        *y = simd.mul_add_f32s(a, *x, *y);
    }
    for (y, x) in y_tail.iter_mut().zip(x_tail) {
        *y += alpha * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Check;

    impl pulp::WithSimd for Check {
        type Output = ();

        fn with_simd<S: Simd>(self, simd: S) {
            for len in [0, 1, 7, 8, 19, 64, 77] {
                let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
                let b: Vec<f32> = (0..len).map(|i| 1.0 - i as f32 * 0.5).collect();
                let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                assert!((dot(simd, &a, &b) - expected).abs() <= 1e-4 * expected.abs().max(1.0), "len {len}");
                let mut y = vec![1.0; len];
                axpy(simd, 2.0, &a, &mut y);
                assert!(y.iter().enumerate().all(|(i, &v)| v == 1.0 + 2.0 * i as f32), "len {len}");
            }
        }
    }

    #[test]
    fn kernels_match_their_definitions_on_every_length() {
        dispatch(Check);
        // And on the scalar fallback.
        pulp::Simd::vectorize(pulp::Scalar, Check);
    }
}
