//! `GET /ranking/{userId}`: course recommendations and rankings for a learning
//! platform's frontend, from an Amazon Personalize campaign in AWS or the embedded
//! recommender on a laptop, degrading to popular items and saying so.
//!
//! One axum [`Router`](axum::Router) ([`routes::router`]) serves both Lambda
//! (`lambda_http::run`) and local runs (`axum::serve`); [`startup::run`] picks.

pub mod backends;
pub mod config;
pub mod error;
pub mod port;
pub mod query;
pub mod routes;
pub mod service;
pub mod startup;

pub use routes::{ApiDoc, AppState, router};

/// The IAM actions this function's code needs inside Lambda, nothing more: the infra
/// template grants exactly these (`infra/tests`), and a test there scans the sources for
/// the AWS SDK calls behind them, so the list cannot drift from the code.
///
/// * `GetRecommendations`, `GetPersonalizedRanking`: the Personalize backend.
/// * `s3:GetObject` on `models/*`: the model versions the fallback serves (`ModelSlot::bucket`);
///   `s3:ListBucket` so that a model not yet published reads as missing (404), not as a 403.
pub const AWS_ACTIONS: &[&str] = &[
    "personalize:GetRecommendations",
    "personalize:GetPersonalizedRanking",
    "s3:GetObject",
    "s3:ListBucket",
];
