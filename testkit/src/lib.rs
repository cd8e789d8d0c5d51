//! Helpers for tests that talk to a local AWS endpoint. `scripts/test` starts moto
//! (`moto[server]` from PyPI) on 127.0.0.1 and exports `MOTO_ENDPOINT`; a test that
//! needs it and finds it missing fails with instructions, it never skips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// The moto endpoint started by `scripts/test`, e.g. `http://127.0.0.1:45123`.
pub fn moto_endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "MOTO_ENDPOINT is not set. This test needs the local AWS endpoint: run `scripts/test` \
             (it installs moto[server] and starts it), or start `moto_server -H 127.0.0.1 -p 5000` \
             yourself and export MOTO_ENDPOINT=http://127.0.0.1:5000"
        ),
    }
}

/// SDK configuration pointing every client at moto, with test credentials.
pub async fn moto_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::for_tests())
        .load()
        .await
}

/// The second moto started by `scripts/test`, for tests that make S3 multipart uploads:
/// moto (5.2.5) keeps upload parts as keys that belong to no bucket, and from then on its
/// `/moto-api/data.json` fails, which tests reading SES mail from it depend on.
pub fn moto_multipart_endpoint() -> String {
    match std::env::var("MOTO_MULTIPART_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "MOTO_MULTIPART_ENDPOINT is not set. This test makes S3 multipart uploads, which need a moto of \
             their own: run `scripts/test`, or start a second `moto_server -H 127.0.0.1 -p 5001` and export \
             MOTO_MULTIPART_ENDPOINT=http://127.0.0.1:5001"
        ),
    }
}

/// As [`moto_config`], pointed at [`moto_multipart_endpoint`].
pub async fn moto_multipart_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto_multipart_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::for_tests())
        .load()
        .await
}

/// A resource name no other test (in this or a parallel process) uses: moto is
/// shared by the whole test run, so tables and buckets must not collide.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
