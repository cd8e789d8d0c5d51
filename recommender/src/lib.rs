//! The embedded recommender: Personalize's job on a laptop.
//!
//! It trains on the very interactions file we hand to Personalize (CSV with the header
//! `USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE[,EVENT_VALUE]`, or the Parquet export), picks a model on a
//! time-held-out validation slice, and answers the ranking API's queries in-process.
//!
//! ```no_run
//! use recommender::{ModelRegistry, QueryOptions, TrainConfig, read_csv, try_train};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let model = try_train(read_csv("interactions.csv")?, &TrainConfig::default())?;
//! let registry = ModelRegistry::in_dir(".data/models");
//! let version = registry.publish(&model).await?;
//!
//! let (_, model) = registry.load_latest().await?;
//! let open_classes = |item: &str| !item.starts_with("archived-");
//! let recs = model.recommend("student-1", 25, &QueryOptions::default().with_filter(&open_classes));
//! let ranked = model.rerank("student-1", &["math-101", "art-7", "not-in-model"]);
//! # let _ = (version, recs, ranked);
//! # Ok(()) }
//! ```
//!
//! # Public API
//! - Input: [`InteractionRow`]; [`read_csv`], [`read_parquet`], [`read_interactions`] stream rows
//!   and name the line or row of a bad one ([`InputError`]).
//! - Training: [`TrainConfig`] (event-type weights, seed, memory budget, optional forced
//!   [`ModelSpec`]); [`train`] for rows, [`try_train`] for a fallible stream; [`TrainError`].
//! - Models: `popularity` (recency-decayed), `item-knn` (sparse), `ease` (dense), `ials`
//!   (linear memory), `ease+ials` (a per-user standardised blend). With no forced model,
//!   every candidate within the memory budget is scored by NDCG@10 on each user's most recent
//!   20 % and the best is refitted on everything; [`ModelInfo::selection`] keeps the figures.
//! - Queries on [`Model`]: [`Model::recommend`] (top-N, seen items excluded by default, an item
//!   filter in [`QueryOptions`], unknown users get popular items with `personalized: false`),
//!   [`Model::rerank`] (unknown items last, in input order, without a score),
//!   [`Model::popular`], [`Model::knows_user`], [`Model::info`].
//! - Files: [`Model::to_bytes`] / [`Model::from_bytes`] (magic, format version, SHA-256; see
//!   [`codec`] for the layout), [`Model::save`] / [`Model::load`].
//! - Versions: [`ModelRegistry`] over an `artifacts::ObjectStore` (the data bucket, or
//!   `$DATA_DIR`): the one owner of the `models/<version>/model.bin` + `LATEST` layout
//!   (`publish` writes `LATEST` last, `latest` to poll, `load` refuses a corrupt file naming
//!   its location, `load_newest_valid`, `live`, candidates that are not live yet with
//!   `store_candidate` / `promote`), and [`LiveModel`],
//!   which swaps in a newer version without a restart and keeps serving the old one when the new
//!   one is refused.
//! - Offline evaluation: [`evaluate::split`] and [`evaluate::evaluate`] implement the protocol of
//!   `recommender evaluate`.

mod algo;
pub mod codec;
mod data;
pub mod evaluate;
pub mod input;
pub mod metrics;
mod model;
#[cfg(feature = "parquet")]
pub mod parquet_input;
pub mod registry;
pub mod synthetic;
mod topn;
mod train;

pub use algo::ials::IalsParams;
pub use algo::vector::simd_level;
pub use codec::{DecodeError, ModelFileError};
pub use input::{InputError, InteractionRow, read_csv, read_csv_from, read_interactions};
pub use model::{CandidateFigures, Model, ModelInfo, ModelSpec, QueryOptions, Recommendations, Selection};
#[cfg(feature = "parquet")]
pub use parquet_input::read_parquet;
pub use registry::{LiveModel, ModelRegistry, Refresh, RegistryError, Version};
pub use train::{DEFAULT_MEMORY_BUDGET_BYTES, MEMORY_BUDGET_ENV, TrainConfig, TrainError, train, try_train};
