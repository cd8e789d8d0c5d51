//! The 2 a.m. pipeline: export the interactions table to Personalize CSV + Parquet,
//! validate it, import it, train a new solution version, gate it on quality and update
//! the campaign, as a resumable state machine that each invocation advances without
//! ever waiting for Personalize. See the crate README for the contract with infra.

pub mod app;
pub mod bench;
pub mod config;
pub mod embedded_model;
pub mod events;
pub mod export;
pub mod manifest;
pub mod personalize;
pub mod pipeline;
pub mod run;
pub mod runs;
pub mod trainer;
