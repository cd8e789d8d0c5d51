//! Adapters behind the [`crate::port::Recommender`] and [`crate::port::Fallback`] ports.

pub mod personalize;
pub mod popularity;
