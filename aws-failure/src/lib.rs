//! One reading of an AWS SDK failure, shared by every adapter (DynamoDB, S3, SES, EventBridge,
//! Lambda, Personalize): a one-line summary for logs and run records, and whether trying again
//! later can help.
//!
//! Why one place: `DisplayErrorContext` prints the whole raw response (headers, body, SDK
//! internals) and each adapter used to keep its own list of "try again" codes, which drifted.
//! Every SDK crate re-exports the same smithy `SdkError`, so one function serves them all.
//!
//! [`timeouts`] is the other half of "how an AWS call can fail": the bounds every client
//! is built with, so that a call which will never answer fails as a timeout instead;
//! [`config::AwsSetup`] loads the SDK configuration with them, once per process, and
//! [`lambda`] says whether the process runs in Lambda and names failed invocations.

#[cfg(feature = "sdk")]
mod classify;
#[cfg(feature = "sdk")]
pub mod config;
pub mod lambda;
#[cfg(feature = "sdk")]
pub mod timeouts;

#[cfg(feature = "sdk")]
pub use classify::*;
