//! Popularity over the embedded interactions store, held in memory: the fallback of
//! last resort, always as fresh as the store.
//!
//! A snapshot is rebuilt in the background whenever any process (the event
//! consumer's CLI, the export) has written to the store, and swapped in whole, so
//! a request never waits for SQLite and never sees half a refresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use schemas::{ItemId, UserId};
use store::StoreError;
use store::embedded::EmbeddedStore;

use crate::backends::embedded::round_score;
use crate::port::{Fallback, ScoredItem, StudentDirectory, StudentList, StudentSummary};

/// Items by popularity with what each user already has. The default is empty, with a
/// marker no store has, so the first refresh always loads.
#[derive(Debug)]
pub struct PopularitySnapshot {
    /// Most popular first; the score is the share of the top item's audience (0 to 1].
    ranked: Vec<ScoredItem>,
    position: HashMap<ItemId, usize>,
    /// Positions in `ranked` of the items each user has interacted with.
    seen: HashMap<UserId, HashSet<usize>>,
    /// The store's change marker when this snapshot was taken.
    marker: i64,
}

impl Default for PopularitySnapshot {
    fn default() -> Self {
        Self { ranked: Vec::new(), position: HashMap::new(), seen: HashMap::new(), marker: -1 }
    }
}

impl PopularitySnapshot {
    /// Reads the whole store. Cost grows with the store; it runs off the request path.
    pub fn load(store: &EmbeddedStore) -> Result<Self, StoreError> {
        let marker = store.change_marker_blocking()?;
        let popular = store.popular_items_blocking(usize::MAX)?;
        let top = popular.first().map_or(1, |(_, users)| (*users).max(1)) as f64;
        let ranked: Vec<ScoredItem> = popular
            .into_iter()
            .map(|(item_id, users)| ScoredItem { item_id, score: Some(round_score(users as f64 / top)) })
            .collect();
        let position: HashMap<ItemId, usize> =
            ranked.iter().enumerate().map(|(i, s)| (s.item_id.clone(), i)).collect();
        let mut seen: HashMap<UserId, HashSet<usize>> = HashMap::new();
        for (user, item) in store.distinct_user_items_blocking()? {
            let (Ok(user), Some(&at)) = (UserId::parse(user), position.get(item.as_str())) else { continue };
            seen.entry(user).or_default().insert(at);
        }
        Ok(Self { ranked, position, seen, marker })
    }

    pub fn item_count(&self) -> usize {
        self.ranked.len()
    }

    pub fn user_count(&self) -> usize {
        self.seen.len()
    }

    /// The first `limit` students by id with the number of classes each has.
    pub fn students(&self, limit: usize) -> StudentList {
        let mut users: Vec<(&UserId, usize)> = self.seen.iter().map(|(u, s)| (u, s.len())).collect();
        users.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let students = users
            .into_iter()
            .take(limit)
            .map(|(user_id, classes)| StudentSummary { user_id: user_id.clone(), classes })
            .collect();
        StudentList { total: self.seen.len(), students }
    }

    fn top_unseen(&self, seen: Option<&HashSet<usize>>, n: usize) -> Vec<ScoredItem> {
        self.ranked
            .iter()
            .enumerate()
            .filter(|(at, _)| seen.is_none_or(|s| !s.contains(at)))
            .take(n)
            .map(|(_, item)| item.clone())
            .collect()
    }

    fn rerank(&self, items: &[ItemId]) -> Vec<ScoredItem> {
        let (mut known, unknown): (Vec<_>, Vec<_>) =
            items.iter().partition(|item| self.position.contains_key(item.as_str()));
        known.sort_by_key(|item| self.position[item.as_str()]);
        known
            .into_iter()
            .map(|item| self.ranked[self.position[item.as_str()]].clone())
            .chain(unknown.into_iter().map(|item| ScoredItem { item_id: item.clone(), score: None }))
            .collect()
    }
}

/// The current snapshot, swapped whole on refresh.
#[derive(Clone, Default)]
pub struct SharedPopularity {
    current: Arc<RwLock<Arc<PopularitySnapshot>>>,
}

impl SharedPopularity {
    pub fn new(snapshot: PopularitySnapshot) -> Self {
        Self { current: Arc::new(RwLock::new(Arc::new(snapshot))) }
    }

    pub fn get(&self) -> Arc<PopularitySnapshot> {
        // The lock guards one pointer swap; a poisoned lock still holds a whole snapshot.
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, snapshot: PopularitySnapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }

    /// Reloads the snapshot whenever the store changed, every `every`, until the
    /// process ends. Failures are logged and the old snapshot keeps serving.
    pub fn refresh_in_background(
        &self,
        store: EmbeddedStore,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let store = store.clone();
                let known = shared.get().marker;
                let reloaded =
                    tokio::task::spawn_blocking(move || -> Result<Option<PopularitySnapshot>, StoreError> {
                        if store.change_marker_blocking()? == known {
                            return Ok(None);
                        }
                        PopularitySnapshot::load(&store).map(Some)
                    })
                    .await;
                match reloaded {
                    Ok(Ok(Some(snapshot))) => {
                        tracing::info!(
                            items = snapshot.item_count(),
                            users = snapshot.user_count(),
                            "popularity refreshed"
                        );
                        shared.replace(snapshot);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "popularity refresh failed; still serving the previous snapshot")
                    }
                    Err(e) => tracing::warn!(error = %e, "popularity refresh task failed"),
                }
            }
        })
    }
}

impl StudentDirectory for SharedPopularity {
    fn students(&self, limit: usize) -> StudentList {
        self.get().students(limit)
    }
}

/// The fallback: popular items, minus what the user already has when we know it.
pub struct PopularFallback {
    popularity: SharedPopularity,
}

impl PopularFallback {
    pub fn new(popularity: SharedPopularity) -> Self {
        Self { popularity }
    }
}

impl Fallback for PopularFallback {
    fn popular(&self, user: &UserId, n: usize) -> Option<Vec<ScoredItem>> {
        let snapshot = self.popularity.get();
        if snapshot.ranked.is_empty() {
            return None;
        }
        Some(snapshot.top_unseen(snapshot.seen.get(user), n))
    }

    fn rerank(&self, items: &[ItemId]) -> Option<Vec<ScoredItem>> {
        // Always possible: without data, the caller's own order is the honest answer.
        Some(self.popularity.get().rerank(items))
    }

    fn has_data(&self) -> bool {
        !self.popularity.get().ranked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{EventId, EventType, Interaction, Timestamp};

    fn store_with(rows: &[(&str, &str)]) -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        let rows: Vec<Interaction> = rows
            .iter()
            .enumerate()
            .map(|(n, (user, item))| Interaction {
                user_id: user.parse().unwrap(),
                item_id: item.parse().unwrap(),
                timestamp: Timestamp::from_epoch_seconds(1_767_225_600 + n as i64).unwrap(),
                event_type: EventType::enrolled(),
                event_value: None,
                event_id: EventId::parse(format!("e{n}")).unwrap(),
            })
            .collect();
        store.put_many_blocking(&rows).unwrap();
        (dir, store)
    }

    fn ids(items: &[ScoredItem]) -> Vec<&str> {
        items.iter().map(|i| i.item_id.as_str()).collect()
    }

    #[test]
    fn popular_first_and_seen_items_excluded() {
        let (_dir, store) =
            store_with(&[("u1", "A"), ("u2", "A"), ("u3", "A"), ("u1", "B"), ("u2", "B"), ("u3", "C")]);
        let snapshot = PopularitySnapshot::load(&store).unwrap();
        assert_eq!(ids(&snapshot.top_unseen(None, 10)), ["A", "B", "C"]);
        assert_eq!(snapshot.ranked[0].score, Some(1.0));
        assert_eq!(snapshot.ranked[1].score, Some(0.666667));
        let u1 = snapshot.seen.get(&"u1".parse::<UserId>().unwrap());
        assert_eq!(ids(&snapshot.top_unseen(u1, 10)), ["C"]);
    }

    #[test]
    fn rerank_orders_known_items_and_keeps_unknown_ones_last() {
        let (_dir, store) = store_with(&[("u1", "A"), ("u2", "A"), ("u1", "B")]);
        let snapshot = PopularitySnapshot::load(&store).unwrap();
        let input: Vec<ItemId> = ["Z", "B", "Y", "A"].iter().map(|s| s.parse().unwrap()).collect();
        let out = snapshot.rerank(&input);
        assert_eq!(ids(&out), ["A", "B", "Z", "Y"]);
        assert_eq!(out[2].score, None);
    }

    #[tokio::test]
    async fn the_snapshot_follows_writes_from_elsewhere() {
        let (dir, store) = store_with(&[("u1", "A")]);
        let shared = SharedPopularity::new(PopularitySnapshot::load(&store).unwrap());
        let task = shared.refresh_in_background(store.clone(), Duration::from_millis(20));
        // Another handle on the same file stands in for the event consumer's process.
        let other = EmbeddedStore::open_in(dir.path()).unwrap();
        other
            .put_blocking(&Interaction {
                user_id: "u9".parse().unwrap(),
                item_id: "NEW".parse().unwrap(),
                timestamp: Timestamp::from_epoch_seconds(1_767_225_700).unwrap(),
                event_type: EventType::enrolled(),
                event_value: None,
                event_id: EventId::parse("fresh").unwrap(),
            })
            .unwrap();
        let mut waited = 0;
        while shared.get().item_count() < 2 && waited < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        task.abort();
        assert_eq!(shared.get().item_count(), 2, "the refresh picked up the new item");
    }
}
