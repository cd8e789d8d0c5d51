//! Addresses that must not be mailed again: they bounced for good or complained.
//!
//! SES reviews an account whose bounce rate reaches 10 % or complaint rate 0.5 %, and
//! can pause its sending; mailing a dead address again is how a platform gets there.
//! So a permanent bounce or a complaint (SES's events, [`schemas::ses`]) suppresses the
//! address here, and the consumer looks here before every send.
//!
//! A record is keyed by an [`AddressKey`], a SHA-256 of the normalised address, so the
//! list never holds the address itself. It lives with the idempotency ledger: the same
//! DynamoDB table (items `suppression#<key>`, no TTL) or the same SQLite file. The
//! account-level suppression list of SES is fed as well ([`crate::mail::Mailer::suppress_destination`]),
//! so that SES itself refuses the address should any other sender on the account try it.

pub mod dynamodb;
pub mod embedded;

use std::fmt;

use async_trait::async_trait;
use schemas::EmailAddress;
use sha2::{Digest, Sha256};

use crate::ledger::LedgerError;

/// SHA-256 (hex) of the address in lower case. Mailbox names are case-sensitive in
/// theory and never in practice; SES's own suppression list ignores case too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AddressKey(String);

impl AddressKey {
    pub fn of(address: &EmailAddress) -> Self {
        Self(hex::encode(Sha256::digest(address.as_str().to_ascii_lowercase().as_bytes())))
    }

    /// A key as stored (64 hex digits), e.g. read back from a record.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| Self(hex.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressKey({}…)", &self.0[..12])
    }
}

/// Why an address is suppressed (SES's account-level list knows the same two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    Bounce,
    Complaint,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "bounce",
            SuppressionReason::Complaint => "complaint",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [SuppressionReason::Bounce, SuppressionReason::Complaint].into_iter().find(|r| r.as_str() == raw)
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A suppression as recorded: the first reason stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub reason: SuppressionReason,
    /// SES's words for it: `Permanent/General`, `abuse`, … (never an address).
    pub detail: String,
    /// Epoch seconds.
    pub since: i64,
}

impl Suppression {
    /// `bounce (Permanent/General)`: what an outcome and a ledger receipt say.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.reason, self.detail)
    }
}

/// The port: one record per address key.
#[async_trait]
pub trait SuppressionList: Send + Sync {
    async fn lookup(&self, key: &AddressKey) -> Result<Option<Suppression>, LedgerError>;

    /// Suppresses the address unless it already is (then the first record stands and
    /// nothing changes). True when this call suppressed it.
    async fn suppress(&self, key: &AddressKey, suppression: &Suppression) -> Result<bool, LedgerError>;

    /// Counts one transient bounce (a full mailbox, a greylisting server) against the
    /// address and returns the count so far; it does not suppress.
    async fn count_transient_bounce(&self, key: &AddressKey, now: i64) -> Result<u64, LedgerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_case_and_never_shows_the_address() {
        let a = AddressKey::of(&EmailAddress::parse("An.Nguyen@Example.edu.vn").unwrap());
        let b = AddressKey::of(&EmailAddress::parse("an.nguyen@example.edu.vn").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 64);
        assert!(!format!("{a:?}").contains("nguyen"));
        assert_eq!(AddressKey::from_hex(a.as_str()), Some(a));
        assert_eq!(AddressKey::from_hex("An.Nguyen"), None);
    }
}
