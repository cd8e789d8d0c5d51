//! The training matrix: interactions deduplicated per (user, item) into one weight and one
//! timestamp, indexed densely, stored by user (CSR) with the item-major transpose on demand.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Users × items, one entry per pair that has a positive weight. Users and items are numbered in
/// lexicographic order of their ids, so the same data gives the same numbering whatever the row order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dataset {
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    /// `user_ptr[u]..user_ptr[u + 1]` indexes the user's entries, sorted by item.
    pub user_ptr: Vec<usize>,
    pub items: Vec<u32>,
    pub weights: Vec<f32>,
    /// The latest time the user touched the item, epoch seconds.
    pub times: Vec<i64>,
}

/// Entries of one user (or one item, for the transpose).
pub(crate) struct Row<'a> {
    pub idx: &'a [u32],
    pub weights: &'a [f32],
}

impl Dataset {
    /// Builds the matrix from `(user, item, weight, timestamp)` events; several events on one pair
    /// merge into the strongest weight and the latest time. Non-positive weights are dropped.
    pub fn from_events(events: impl IntoIterator<Item = (String, String, f32, i64)>) -> Self {
        let mut user_index: HashMap<String, u32> = HashMap::new();
        let mut item_index: HashMap<String, u32> = HashMap::new();
        let mut user_ids = Vec::new();
        let mut item_ids = Vec::new();
        let mut triples: Vec<(u32, u32, f32, i64)> = Vec::new();
        for (user, item, weight, time) in events {
            if weight.is_nan() || weight <= 0.0 {
                continue;
            }
            let u = *user_index.entry(user).or_insert_with_key(|k| {
                user_ids.push(k.clone());
                (user_ids.len() - 1) as u32
            });
            let i = *item_index.entry(item).or_insert_with_key(|k| {
                item_ids.push(k.clone());
                (item_ids.len() - 1) as u32
            });
            triples.push((u, i, weight, time));
        }
        // Renumber in id order so that row order never changes the model.
        let user_order = sorted_permutation(&user_ids);
        let item_order = sorted_permutation(&item_ids);
        for t in &mut triples {
            t.0 = user_order[t.0 as usize];
            t.1 = item_order[t.1 as usize];
        }
        user_ids.sort_unstable();
        item_ids.sort_unstable();
        triples.sort_unstable_by_key(|t| (t.0, t.1));

        let mut data =
            Dataset { user_ptr: vec![0; user_ids.len() + 1], user_ids, item_ids, ..Default::default() };
        let mut previous: Option<(u32, u32)> = None;
        for (u, i, w, t) in triples {
            if previous == Some((u, i)) {
                let last = data.items.len() - 1;
                data.weights[last] = data.weights[last].max(w);
                data.times[last] = data.times[last].max(t);
            } else {
                data.items.push(i);
                data.weights.push(w);
                data.times.push(t);
                data.user_ptr[u as usize + 1] += 1;
            }
            previous = Some((u, i));
        }
        for u in 0..data.user_ids.len() {
            data.user_ptr[u + 1] += data.user_ptr[u];
        }
        data
    }

    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    pub fn n_entries(&self) -> usize {
        self.items.len()
    }

    pub fn user(&self, u: usize) -> Row<'_> {
        let r = self.user_ptr[u]..self.user_ptr[u + 1];
        Row { idx: &self.items[r.clone()], weights: &self.weights[r] }
    }

    pub fn user_times(&self, u: usize) -> &[i64] {
        &self.times[self.user_ptr[u]..self.user_ptr[u + 1]]
    }

    /// The item-major copy: for each item, its users and weights.
    pub fn transpose(&self) -> Transposed {
        let n_items = self.n_items();
        let mut ptr = vec![0usize; n_items + 1];
        for &i in &self.items {
            ptr[i as usize + 1] += 1;
        }
        for i in 0..n_items {
            ptr[i + 1] += ptr[i];
        }
        let mut fill = ptr.clone();
        let mut users = vec![0u32; self.items.len()];
        let mut weights = vec![0f32; self.items.len()];
        for u in 0..self.n_users() {
            let row = self.user(u);
            for (&i, &w) in row.idx.iter().zip(row.weights) {
                let at = fill[i as usize];
                users[at] = u as u32;
                weights[at] = w;
                fill[i as usize] += 1;
            }
        }
        Transposed { ptr, users, weights }
    }

    /// Keeps the same user and item numbering but only the entries `keep` accepts.
    pub fn filter(&self, mut keep: impl FnMut(usize, usize) -> bool) -> Dataset {
        let mut out = Dataset {
            user_ids: self.user_ids.clone(),
            item_ids: self.item_ids.clone(),
            user_ptr: Vec::with_capacity(self.user_ptr.len()),
            ..Default::default()
        };
        out.user_ptr.push(0);
        for u in 0..self.n_users() {
            for e in self.user_ptr[u]..self.user_ptr[u + 1] {
                if keep(u, e) {
                    out.items.push(self.items[e]);
                    out.weights.push(self.weights[e]);
                    out.times.push(self.times[e]);
                }
            }
            out.user_ptr.push(out.items.len());
        }
        out
    }

    /// A digest of the content, used in version names: the same data gives the same suffix.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for id in self.user_ids.iter().chain(&self.item_ids) {
            h.update((id.len() as u64).to_le_bytes());
            h.update(id.as_bytes());
        }
        for &p in &self.user_ptr {
            h.update((p as u64).to_le_bytes());
        }
        for (&i, &w) in self.items.iter().zip(&self.weights) {
            h.update(i.to_le_bytes());
            h.update(w.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self.times.iter().copied().min()?;
        let max = self.times.iter().copied().max()?;
        Some((min, max))
    }
}

/// Item-major view of a [`Dataset`].
pub(crate) struct Transposed {
    pub ptr: Vec<usize>,
    pub users: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Transposed {
    pub fn item(&self, i: usize) -> Row<'_> {
        let r = self.ptr[i]..self.ptr[i + 1];
        Row { idx: &self.users[r.clone()], weights: &self.weights[r] }
    }
}

/// `order[old] = new` where new numbers follow the lexicographic order of `ids`.
fn sorted_permutation(ids: &[String]) -> Vec<u32> {
    let mut by_id: Vec<u32> = (0..ids.len() as u32).collect();
    by_id.sort_unstable_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize]));
    let mut order = vec![0u32; ids.len()];
    for (new, &old) in by_id.iter().enumerate() {
        order[old as usize] = new as u32;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(u: &str, i: &str, w: f32, t: i64) -> (String, String, f32, i64) {
        (u.into(), i.into(), w, t)
    }

    #[test]
    fn merges_repeated_pairs_into_the_strongest_weight_and_latest_time() {
        let d = Dataset::from_events([
            ev("u2", "b", 0.5, 10),
            ev("u1", "b", 1.0, 5),
            ev("u2", "b", 1.0, 3),
            ev("u2", "a", 0.5, 7),
            ev("u1", "c", 0.0, 9),
        ]);
        assert_eq!(d.user_ids, ["u1", "u2"]);
        // "c" only had a zero weight: an event type weighted 0 does not count as an interaction.
        assert_eq!(d.item_ids, ["a", "b"]);
        assert_eq!(d.user_ptr, [0, 1, 3]);
        assert_eq!(d.items, [1, 0, 1]);
        assert_eq!(d.weights, [1.0, 0.5, 1.0]);
        assert_eq!(d.times, [5, 7, 10]);
        let t = d.transpose();
        assert_eq!(t.item(1).idx, [0, 1]);
        assert_eq!(t.item(0).idx, [1]);
    }

    #[test]
    fn row_order_does_not_change_the_numbering() {
        let rows = vec![ev("x", "p", 1.0, 1), ev("y", "q", 1.0, 2), ev("x", "q", 1.0, 3)];
        let mut reversed = rows.clone();
        reversed.reverse();
        let a = Dataset::from_events(rows);
        let b = Dataset::from_events(reversed);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.items, b.items);
    }
}
