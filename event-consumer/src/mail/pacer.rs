//! Keeps a fan-out of emails below the account's SES sending rate.
//!
//! Each send takes the next free slot, `1 / rate` seconds after the previous one;
//! sends that arrive late are not bunched to catch up (a slow SES is not followed by a
//! burst). The rate is per process: two announcements fanning out at once in two
//! Lambda instances send at twice the rate, so configure `EMAIL_SEND_RATE` with room
//! to spare (SES answers a burst over the quota with a throttle, which is retried).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next_slot: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `per_second` emails a second at most; 0 or less means no pacing.
    pub fn new(per_second: f64) -> Self {
        let interval =
            if per_second > 0.0 { Duration::from_secs_f64(1.0 / per_second) } else { Duration::ZERO };
        Self { interval, next_slot: Mutex::new(None) }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for this send's slot.
    pub async fn wait(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot).await;
    }

    /// Takes the next free slot at or after `now`.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_interval_and_a_late_send_does_not_catch_up() {
        let pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        let slots: Vec<_> = (0..4).map(|_| pacer.reserve(t0) - t0).collect();
        assert_eq!(slots, [ms(0), ms(100), ms(200), ms(300)], "four sends at once are spread out");
        // Two seconds of quiet: the next send goes at once, the one after waits its interval.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(pacer.reserve(later), later);
        assert_eq!(pacer.reserve(later), later + ms(100));
    }

    #[tokio::test]
    async fn waiting_takes_at_least_the_slots_and_a_zero_rate_none() {
        let pacer = Pacer::new(200.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        assert!(start.elapsed() >= Duration::from_millis(20), "{:?}", start.elapsed());
        let unpaced = Pacer::new(0.0);
        assert_eq!(unpaced.interval(), Duration::ZERO);
        assert!(unpaced.next_slot.lock().unwrap().is_none());
        for _ in 0..100 {
            unpaced.wait().await;
        }
        assert!(unpaced.next_slot.lock().unwrap().is_none(), "no slots are taken without a rate");
    }
}
