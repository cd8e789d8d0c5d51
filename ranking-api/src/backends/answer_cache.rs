//! Answers of the embedded model, kept per student until the model changes.
//!
//! An embedded answer depends only on the model and the request (student, `numResults`), and the
//! model changes once a night, while a student's pages ask for the same list again and again.
//! Keeping answers turns those repeats into one hash lookup instead of a top-N over the catalog.
//! Personalize answers are never kept: its campaigns learn from events in real time, and every
//! answer carries its own `recommendationId`.
//!
//! Memory is bounded by bytes, not entries: two generations of at most `budget / 2` each. When
//! the young one is full, the old one is dropped and the young one becomes old; a hit in the old
//! one moves the answer back to the young one. Answers asked for recently stay, the rest go,
//! without the bookkeeping of an exact LRU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use recommender::Model;

use crate::port::ScoredItem;

/// A student and how many items they asked for.
type Key = (String, usize);

/// The answers of one model.
pub struct AnswerCache {
    budget_bytes: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The model these answers came from; held so that a new model at the same address is
    /// never mistaken for it.
    model: Option<Arc<Model>>,
    young: HashMap<Key, Arc<[ScoredItem]>>,
    young_bytes: usize,
    old: HashMap<Key, Arc<[ScoredItem]>>,
}

/// Bytes an entry takes, roughly: the key, the item ids, the scores, and the maps' overhead.
fn cost(key: &Key, items: &[ScoredItem]) -> usize {
    const ENTRY_OVERHEAD: usize = 96;
    ENTRY_OVERHEAD
        + key.0.len()
        + items.iter().map(|i| i.item_id.as_str().len() + size_of::<ScoredItem>()).sum::<usize>()
}

impl AnswerCache {
    /// A cache of at most about `budget_bytes`; 0 keeps nothing.
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget_bytes, state: Mutex::new(State::default()) }
    }

    pub fn is_enabled(&self) -> bool {
        self.budget_bytes > 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst a partly filled map of whole answers.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer `model` gave this student for `n` items, if kept.
    pub fn get(&self, model: &Arc<Model>, user: &str, n: usize) -> Option<Arc<[ScoredItem]>> {
        if !self.is_enabled() {
            return None;
        }
        let mut state = self.state();
        if !state.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, model)) {
            return None;
        }
        let key = (user.to_owned(), n);
        if let Some(items) = state.young.get(&key) {
            return Some(items.clone());
        }
        let items = state.old.remove(&key)?;
        self.insert_young(&mut state, key, items.clone());
        Some(items)
    }

    /// Keeps `model`'s answer; an answer of a newer model than the kept ones replaces them all.
    pub fn put(&self, model: &Arc<Model>, user: &str, n: usize, items: Arc<[ScoredItem]>) {
        if !self.is_enabled() {
            return;
        }
        let mut state = self.state();
        if !state.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, model)) {
            *state = State { model: Some(model.clone()), ..State::default() };
        }
        self.insert_young(&mut state, (user.to_owned(), n), items);
    }

    fn insert_young(&self, state: &mut State, key: Key, items: Arc<[ScoredItem]>) {
        let bytes = cost(&key, &items);
        let half = self.budget_bytes / 2;
        if bytes > half {
            return;
        }
        if state.young_bytes + bytes > half {
            state.old = std::mem::take(&mut state.young);
            state.young_bytes = 0;
        }
        state.young_bytes += bytes;
        state.young.insert(key, items);
    }

    /// Entries kept now (both generations).
    pub fn len(&self) -> usize {
        let state = self.state();
        state.young.len() + state.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recommender::{InteractionRow, TrainConfig};
    use schemas::ItemId;

    fn model() -> Arc<Model> {
        let rows: Vec<InteractionRow> = (0..4)
            .flat_map(|u| {
                ["A", "B"].into_iter().map(move |i| InteractionRow {
                    user_id: format!("u{u}"),
                    item_id: i.into(),
                    timestamp: 1_767_225_600,
                    event_type: "enrolled".into(),
                    event_value: None,
                })
            })
            .collect();
        Arc::new(recommender::train(rows, &TrainConfig::default()).unwrap())
    }

    fn answer(id: &str) -> Arc<[ScoredItem]> {
        vec![ScoredItem { item_id: ItemId::parse(id.to_owned()).unwrap(), score: Some(1.0) }].into()
    }

    #[test]
    fn keeps_answers_per_student_and_size_for_one_model() {
        let cache = AnswerCache::new(1 << 20);
        let (m, other) = (model(), model());
        assert!(cache.get(&m, "u1", 5).is_none());
        cache.put(&m, "u1", 5, answer("A"));
        assert_eq!(cache.get(&m, "u1", 5).unwrap()[0].item_id.as_str(), "A");
        assert!(cache.get(&m, "u1", 6).is_none(), "another numResults is another answer");
        assert!(cache.get(&m, "u2", 5).is_none());
        assert!(cache.get(&other, "u1", 5).is_none(), "another model's answers are not this one's");
        cache.put(&other, "u2", 5, answer("B"));
        assert_eq!(cache.len(), 1, "a new model's first answer drops the old model's");
        assert!(cache.get(&m, "u2", 5).is_none());
    }

    #[test]
    fn memory_stays_within_the_budget_and_recent_answers_stay() {
        let m = model();
        let one = cost(&("u-000".to_owned(), 5), &answer("A"));
        let cache = AnswerCache::new(one * 20); // ten a generation
        for u in 0..100 {
            cache.put(&m, &format!("u-{u:03}"), 5, answer("A"));
            // The first student keeps asking, so it is never the oldest.
            assert!(cache.get(&m, "u-000", 5).is_some(), "after {u}");
        }
        assert!(cache.len() <= 20, "{}", cache.len());
        assert!(cache.get(&m, "u-099", 5).is_some(), "the newest answer is kept");
        assert!(cache.get(&m, "u-050", 5).is_none(), "an answer nobody asked for again is gone");
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = AnswerCache::new(0);
        let m = model();
        cache.put(&m, "u1", 5, answer("A"));
        assert!(cache.get(&m, "u1", 5).is_none());
        assert!(cache.is_empty());
    }
}
