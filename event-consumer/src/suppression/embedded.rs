//! Suppression records in the embedded ledger's SQLite file (table `suppressions`).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{AddressKey, Suppression, SuppressionList, SuppressionReason};
use crate::ledger::LedgerError;
use crate::ledger::embedded::EmbeddedLedger;

#[async_trait]
impl SuppressionList for EmbeddedLedger {
    async fn lookup(&self, key: &AddressKey) -> Result<Option<Suppression>, LedgerError> {
        let key = key.clone();
        self.run(move |ledger| {
            let row: Option<(Option<String>, Option<String>, Option<i64>)> = ledger.with_conn(|c| {
                c.query_row(
                    "SELECT reason, detail, suppressed_at FROM suppressions WHERE address_key = ?1",
                    [key.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
            })?;
            let Some((Some(reason), detail, since)) = row else { return Ok(None) };
            let reason = SuppressionReason::parse(&reason).ok_or_else(|| LedgerError::Corrupt {
                key: format!("suppression#{}", key.as_str()),
                reason: format!("reason is {reason:?}"),
            })?;
            Ok(Some(Suppression {
                reason,
                detail: detail.unwrap_or_default(),
                since: since.unwrap_or_default(),
            }))
        })
        .await
    }

    async fn suppress(&self, key: &AddressKey, suppression: &Suppression) -> Result<bool, LedgerError> {
        let (key, suppression) = (key.clone(), suppression.clone());
        self.run(move |ledger| {
            ledger.with_conn(|c| {
                c.execute(
                    "INSERT INTO suppressions (address_key, reason, detail, suppressed_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)
                     ON CONFLICT (address_key) DO UPDATE SET
                        reason = excluded.reason, detail = excluded.detail,
                        suppressed_at = excluded.suppressed_at, updated_at = excluded.updated_at
                     WHERE suppressions.reason IS NULL",
                    params![key.as_str(), suppression.reason.as_str(), suppression.detail, suppression.since],
                )
                .map(|changed| changed == 1)
            })
        })
        .await
    }

    async fn count_transient_bounce(&self, key: &AddressKey, now: i64) -> Result<u64, LedgerError> {
        let key = key.clone();
        self.run(move |ledger| {
            ledger.with_conn(|c| {
                c.query_row(
                    "INSERT INTO suppressions (address_key, transient_bounces, updated_at) VALUES (?1, 1, ?2)
                     ON CONFLICT (address_key) DO UPDATE SET
                        transient_bounces = transient_bounces + 1, updated_at = excluded.updated_at
                     RETURNING transient_bounces",
                    params![key.as_str(), now],
                    |r| r.get::<_, i64>(0),
                )
                .map(|count| count.max(0) as u64)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::EmailAddress;

    fn key(address: &str) -> AddressKey {
        AddressKey::of(&EmailAddress::parse(address).unwrap())
    }

    #[tokio::test]
    async fn the_first_suppression_stands_and_transients_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
        let an = key("an@example.edu.vn");
        assert_eq!(ledger.lookup(&an).await.unwrap(), None);
        assert_eq!(ledger.count_transient_bounce(&an, 10).await.unwrap(), 1);
        assert_eq!(ledger.count_transient_bounce(&an, 11).await.unwrap(), 2);
        assert_eq!(ledger.lookup(&an).await.unwrap(), None, "transient bounces do not suppress");

        let bounce =
            Suppression { reason: SuppressionReason::Bounce, detail: "Permanent/General".into(), since: 20 };
        assert!(ledger.suppress(&an, &bounce).await.unwrap());
        let complaint =
            Suppression { reason: SuppressionReason::Complaint, detail: "abuse".into(), since: 30 };
        assert!(!ledger.suppress(&an, &complaint).await.unwrap(), "already suppressed");
        assert_eq!(ledger.lookup(&an).await.unwrap(), Some(bounce));
        assert_eq!(ledger.count_transient_bounce(&an, 40).await.unwrap(), 3);

        // Another handle on the same file (another process) sees it.
        let other = EmbeddedLedger::open_in(dir.path()).unwrap();
        assert!(other.lookup(&key("AN@example.edu.vn")).await.unwrap().is_some());
        assert_eq!(other.lookup(&key("binh@example.edu.vn")).await.unwrap(), None);
    }
}
