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
