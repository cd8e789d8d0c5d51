//! The one AWS configuration loader of every function: the shared SDK configuration
//! (region, credentials, `AWS_ENDPOINT_URL`) and every client's timeouts, read once at
//! start. Adapters ask it for their service's configuration, so no client is ever built
//! without its bounds.

use aws_types::SdkConfig;

use crate::timeouts::{AwsTimeouts, Service, TimeoutOverrideError};

/// The SDK configuration and the timeouts, loaded together.
#[derive(Debug, Clone)]
pub struct AwsSetup {
    shared: SdkConfig,
    timeouts: AwsTimeouts,
}

impl AwsSetup {
    /// Reads the timeout overrides first (a bad one is refused before anything is
    /// loaded), then the SDK's default chain.
    pub async fn load() -> Result<Self, TimeoutOverrideError> {
        let timeouts = AwsTimeouts::from_env()?;
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self { shared, timeouts })
    }

    /// The configuration a client of `service` is built with: the shared one with that
    /// service's connect, attempt and operation timeouts.
    pub fn for_service(&self, service: Service) -> SdkConfig {
        self.timeouts.get(service).apply(&self.shared)
    }

    /// The shared configuration without service timeouts (region checks, tests).
    pub fn shared(&self) -> &SdkConfig {
        &self.shared
    }

    pub fn timeouts(&self) -> &AwsTimeouts {
        &self.timeouts
    }
}
