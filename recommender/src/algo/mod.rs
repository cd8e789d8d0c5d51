//! The fitting half of each model: plain functions from a [`Dataset`](crate::data::Dataset) to the
//! arrays a [`Scorer`](crate::model::Scorer) serves from.

pub(crate) mod ease;
pub(crate) mod ials;
pub(crate) mod knn;
pub(crate) mod popularity;
pub(crate) mod sparse_ease;
pub(crate) mod vector;
