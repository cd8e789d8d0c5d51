//! Adapters behind the [`crate::port::Recommender`] and [`crate::port::Fallback`] ports.

pub mod bucket_models;
pub mod embedded;
pub mod personalize;
pub mod popularity;
