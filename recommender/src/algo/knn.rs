//! Item-kNN: cosine similarity between items' user vectors, shrunk towards zero when the overlap
//! is small, keeping the `neighbours` most similar items per item. Memory is linear in the catalog
//! (items × neighbours), so this is the model that still trains when a dense matrix cannot.

use crate::data::Dataset;
use crate::topn;

/// Item-item weights in CSR form: row `i` lists the items that having `i` points to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SparseItemItem {
    pub ptr: Vec<u32>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl SparseItemItem {
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let r = self.ptr[i] as usize..self.ptr[i + 1] as usize;
        (&self.idx[r.clone()], &self.val[r])
    }
}

pub(crate) fn fit(data: &Dataset, neighbours: usize, shrink: f32) -> SparseItemItem {
    let n = data.n_items();
    let by_item = data.transpose();
    let norms: Vec<f32> =
        (0..n).map(|i| by_item.item(i).weights.iter().map(|w| w * w).sum::<f32>().sqrt()).collect();
    let mut overlap = vec![0f32; n];
    let mut touched: Vec<u32> = Vec::new();
    let mut out = SparseItemItem { ptr: vec![0], idx: Vec::new(), val: Vec::new() };
    for i in 0..n {
        let col = by_item.item(i);
        for (&u, &wu) in col.idx.iter().zip(col.weights) {
            let row = data.user(u as usize);
            for (&j, &wj) in row.idx.iter().zip(row.weights) {
                if j as usize != i {
                    if overlap[j as usize] == 0.0 {
                        touched.push(j);
                    }
                    overlap[j as usize] += wu * wj;
                }
            }
        }
        let mut best = topn::TopN::new(neighbours);
        for &j in &touched {
            let sim = overlap[j as usize] / (norms[i] * norms[j as usize] + shrink);
            best.offer(sim, j);
            overlap[j as usize] = 0.0;
        }
        touched.clear();
        for (j, sim) in best.into_sorted() {
            out.idx.push(j);
            out.val.push(sim);
        }
        out.ptr.push(out.idx.len() as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_similar_neighbours_with_shrunk_cosine() {
        // a and b share two users; a and c share one.
        let events = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")];
        let data = Dataset::from_events(events.iter().map(|(u, i)| (u.to_string(), i.to_string(), 1.0, 0)));
        let s = fit(&data, 1, 0.0);
        let (idx, val) = s.row(0);
        assert_eq!(idx, [1]);
        // cosine(a, b) = 2 / (sqrt(3) * sqrt(2))
        assert!((val[0] - 2.0 / (3f32.sqrt() * 2f32.sqrt())).abs() < 1e-6);
        let shrunk = fit(&data, 2, 10.0);
        let (idx, val) = shrunk.row(0);
        assert_eq!(idx, [1, 2]);
        assert!((val[1] - 1.0 / (3f32.sqrt() + 10.0)).abs() < 1e-6);
    }
}
