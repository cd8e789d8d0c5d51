//! Adapters behind the [`crate::port::Recommender`] and [`crate::port::Fallback`] ports.

pub mod embedded;
pub mod personalize;
pub mod popularity;
