//! Adapters behind the [`crate::port::Recommender`] and [`crate::port::Fallback`] ports.

pub mod answer_cache;
pub mod embedded;
#[cfg(feature = "aws")]
pub mod personalize;
pub mod popularity;
