//! A trained model and the queries the ranking API makes of it: [`provenance`] (what the model
//! is and how it was chosen), [`kernels`] (the scoring arrays and loops) and [`query`]
//! (recommend, rerank, popular).

mod kernels;
mod provenance;
mod query;

use std::collections::HashMap;

pub(crate) use kernels::{Scorer, UserView};
pub use provenance::{CandidateFigures, ModelInfo, ModelSpec, Selection};
pub use query::{QueryOptions, Recommendations};

/// A trained model: cheap to query from many threads (`&self` only), loaded from a model file or
/// made by [`train`](crate::train).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub(crate) info: ModelInfo,
    pub(crate) item_ids: Vec<String>,
    pub(crate) user_ids: Vec<String>,
    /// Per user, the items seen (sorted) and their weights: needed to exclude them and to score
    /// item-item models.
    pub(crate) history_ptr: Vec<u32>,
    pub(crate) history_items: Vec<u32>,
    pub(crate) history_weights: Vec<f32>,
    pub(crate) popularity: Vec<f32>,
    pub(crate) scorer: Scorer,
    // Derived on construction, never stored.
    pub(crate) item_index: HashMap<String, u32>,
    pub(crate) user_index: HashMap<String, u32>,
    pub(crate) popular_order: Vec<u32>,
}

impl Model {
    /// Assembles a model and derives its lookup tables.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        info: ModelInfo,
        item_ids: Vec<String>,
        user_ids: Vec<String>,
        history_ptr: Vec<u32>,
        history_items: Vec<u32>,
        history_weights: Vec<f32>,
        popularity: Vec<f32>,
        scorer: Scorer,
    ) -> Self {
        let item_index = item_ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        let user_index = user_ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        let mut popular_order: Vec<u32> = (0..item_ids.len() as u32).collect();
        popular_order
            .sort_by(|&a, &b| popularity[b as usize].total_cmp(&popularity[a as usize]).then(a.cmp(&b)));
        Self {
            info,
            item_ids,
            user_ids,
            history_ptr,
            history_items,
            history_weights,
            popularity,
            scorer,
            item_index,
            user_index,
            popular_order,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn knows_user(&self, user_id: &str) -> bool {
        self.user_index.contains_key(user_id)
    }

    pub fn knows_item(&self, item_id: &str) -> bool {
        self.item_index.contains_key(item_id)
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }

    /// The items a known user interacted with in the training data (empty for unknown users).
    pub fn history(&self, user_id: &str) -> Vec<&str> {
        self.user_index.get(user_id).map_or_else(Vec::new, |&u| {
            self.view(u as usize).items.iter().map(|&i| self.item_ids[i as usize].as_str()).collect()
        })
    }

    fn view(&self, u: usize) -> UserView<'_> {
        let r = self.history_ptr[u] as usize..self.history_ptr[u + 1] as usize;
        UserView { index: u, items: &self.history_items[r.clone()], weights: &self.history_weights[r] }
    }

    pub(crate) fn item_position(&self, item_id: &str) -> Option<u32> {
        self.item_index.get(item_id).copied()
    }
}
