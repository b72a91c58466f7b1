//! Exact rolling 60-second windows (sliding logs).
//!
//! An entry recorded at `t` is live while `now - t < 60_000`, i.e. every window
//! `(now - 60 s, now]` is checked exactly.

use std::collections::VecDeque;

pub const WINDOW_MS: u64 = 60_000;

/// Which per-minute limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinuteLimit {
    Rpm,
    Tpm,
}

/// Sliding log of admitted requests with their input-token counts.
#[derive(Debug, Default)]
pub struct SlidingLog {
    entries: VecDeque<(u64, u64)>,
    tokens: u64,
}

impl SlidingLog {
    pub fn trim(&mut self, now: u64) {
        while let Some(&(t, n)) = self.entries.front() {
            if now.saturating_sub(t) >= WINDOW_MS {
                self.entries.pop_front();
                self.tokens -= n;
            } else {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    fn expiry_ms(t: u64, now: u64) -> u64 {
        (t + WINDOW_MS).saturating_sub(now).max(1)
    }

    /// Would admitting one more request with `tokens` input tokens stay within the limits?
    /// On refusal returns the limit and the milliseconds until enough of the window frees.
    pub fn check(
        &mut self,
        now: u64,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Result<(), (MinuteLimit, u64)> {
        self.trim(now);
        if let Some(rpm) = rpm {
            let len = self.entries.len() as u64;
            if len + 1 > rpm {
                let retry = if rpm == 0 {
                    WINDOW_MS
                } else {
                    // The (len - rpm + 1) oldest entries must expire.
                    Self::expiry_ms(self.entries[(len - rpm) as usize].0, now)
                };
                return Err((MinuteLimit::Rpm, retry));
            }
        }
        if let Some(tpm) = tpm {
            if self.tokens + tokens > tpm {
                if tokens > tpm {
                    return Err((MinuteLimit::Tpm, WINDOW_MS));
                }
                let mut freed = 0;
                let mut retry = WINDOW_MS;
                for &(t, n) in &self.entries {
                    freed += n;
                    if self.tokens - freed + tokens <= tpm {
                        retry = Self::expiry_ms(t, now);
                        break;
                    }
                }
                return Err((MinuteLimit::Tpm, retry));
            }
        }
        Ok(())
    }

    pub fn push(&mut self, now: u64, tokens: u64) {
        self.trim(now);
        self.entries.push_back((now, tokens));
        self.tokens += tokens;
    }
}

/// Counts arrivals in the rolling minute and remembers the maximum ever seen.
#[derive(Debug, Default)]
pub struct ArrivalWindow {
    ts: VecDeque<u64>,
    pub max: u64,
}

impl ArrivalWindow {
    pub fn record(&mut self, now: u64) -> u64 {
        while let Some(&t) = self.ts.front() {
            if now.saturating_sub(t) >= WINDOW_MS {
                self.ts.pop_front();
            } else {
                break;
            }
        }
        self.ts.push_back(now);
        let n = self.ts.len() as u64;
        self.max = self.max.max(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_admits_exactly_the_limit() {
        let mut w = SlidingLog::default();
        let t0 = 1_000_000;
        for i in 0..5 {
            assert!(w.check(t0 + i * 100, Some(5), None, 10).is_ok());
            w.push(t0 + i * 100, 10);
        }
        // 6th refused; oldest (t0) frees at t0+60000.
        assert_eq!(w.check(t0 + 1_000, Some(5), None, 10), Err((MinuteLimit::Rpm, 59_000)));
        // At exactly t0+60000 the first entry has left the window.
        assert!(w.check(t0 + 60_000, Some(5), None, 10).is_ok());
        assert_eq!(w.len(), 4);
        // One millisecond earlier it had not.
        let mut w2 = SlidingLog::default();
        w2.push(t0, 1);
        assert_eq!(w2.check(t0 + 59_999, Some(1), None, 1), Err((MinuteLimit::Rpm, 1)));
    }

    #[test]
    fn rpm_retry_when_over_capacity() {
        // After a config change lowered the limit: 4 live entries, rpm 2 → the 3rd oldest
        // must expire before one more fits.
        let mut w = SlidingLog::default();
        for t in [0u64, 10, 20, 30] {
            w.push(100_000 + t, 1);
        }
        assert_eq!(w.check(100_030, Some(2), None, 1), Err((MinuteLimit::Rpm, 60_000 - 10)));
        assert_eq!(w.check(100_030, Some(0), None, 1), Err((MinuteLimit::Rpm, 60_000)));
    }

    #[test]
    fn tpm_tracks_running_total() {
        let mut w = SlidingLog::default();
        let t0 = 500_000;
        w.push(t0, 40);
        w.push(t0 + 10_000, 30);
        w.push(t0 + 20_000, 20);
        assert_eq!(w.tokens(), 90);
        assert!(w.check(t0 + 30_000, None, Some(100), 10).is_ok());
        // 90 + 50 > 100: need to free 40 → the first entry (expires at t0+60000).
        assert_eq!(w.check(t0 + 30_000, None, Some(100), 50), Err((MinuteLimit::Tpm, 30_000)));
        // 90 + 60 > 100: need 50 freed → first two entries (second expires at t0+70000).
        assert_eq!(w.check(t0 + 30_000, None, Some(100), 60), Err((MinuteLimit::Tpm, 40_000)));
        // Larger than the whole limit: never fits.
        assert_eq!(w.check(t0 + 30_000, None, Some(100), 101), Err((MinuteLimit::Tpm, WINDOW_MS)));
        w.trim(t0 + 60_000);
        assert_eq!(w.tokens(), 50);
        assert_eq!(w.len(), 2);
        w.trim(t0 + 200_000);
        assert!(w.is_empty());
        assert_eq!(w.tokens(), 0);
    }

    #[test]
    fn arrival_window_max() {
        let mut a = ArrivalWindow::default();
        for i in 0..10 {
            a.record(i * 1_000);
        }
        assert_eq!(a.max, 10);
        // 70 s later, the old ones are gone.
        assert_eq!(a.record(70_000), 1);
        assert_eq!(a.max, 10);
        // Boundary: an arrival exactly 60 s after another does not share its window.
        let mut b = ArrivalWindow::default();
        b.record(0);
        assert_eq!(b.record(60_000), 1);
        assert_eq!(b.record(60_001), 2);
    }
}
