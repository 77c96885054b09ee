//! Event-time progress: the watermark over a job's input partitions, and how late an event is.
//!
//! A watermark `w` means "every event with time `< w` has arrived": windows with `end <= w` are complete and
//! an event with `ts < w` is late. With bounded out-of-orderness `delay`, a partition whose largest event time is
//! `m` vouches for `m - delay` (Flink's `BoundedOutOfOrdernessWatermarks`, which emits `m - delay - 1` under its
//! inclusive convention: the same instant).
//!
//! When every partition is idle, the watermark follows processing time (bounded by the out-of-orderness), so
//! windows close when input stops. This module never reads a clock; processing time is an argument.

use crate::error::StreamError;

#[derive(Debug, Clone)]
struct PartitionState {
    /// Largest event time seen; `None` until the first event.
    max_ts: Option<i64>,
    /// Processing time of the last event, or of the tracker's creation.
    last_active: i64,
    idle: bool,
}

/// The watermark over `N` input partitions with bounded out-of-orderness and idle detection.
///
/// Definition (what the property tests check against a from-scratch model):
/// - A partition is *idle* after [`WatermarkTracker::advance_processing_time`] found no event on it for
///   `idle_timeout` ms of processing time (`now - last_active >= idle_timeout`; a partition that never had an
///   event counts from the tracker's creation). It is *active* again from its next event
///   ([`WatermarkTracker::observe`]). Idleness only changes in those two calls.
/// - The *candidate* is `min(max_ts - delay)` over active partitions. There is none when no partition is active
///   (all idle) or when an active partition has not seen any event yet (it could still send anything).
/// - The watermark is the largest candidate seen after any call so far: `None` until the first candidate, and
///   from then on never `None` and never lower. In particular it is `None` before the first event, and after
///   it stays `None` until every partition has either seen an event or gone idle. When every partition is idle
///   (and some partition has had an event) the candidate is `now - delay`: event time follows processing time,
///   so the last windows close without a later event. A partition that comes back behind the watermark holds
///   it (it does not regress) until it catches up.
///
/// `delay` subtraction saturates at `i64::MIN`. Processing time passed in is made monotone (`max` of all seen).
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    delay: i64,
    idle_timeout: Option<i64>,
    now: i64,
    partitions: Vec<PartitionState>,
    /// Current candidate (see the type docs), kept so that most events update the watermark in O(1).
    candidate: Option<i64>,
    watermark: Option<i64>,
}

impl WatermarkTracker {
    /// `idle_timeout: None` disables idleness (a silent partition holds the watermark back forever, the
    /// safe default for exactly-reproducible results). `now` is the processing time at creation.
    pub fn new(partitions: usize, delay: i64, idle_timeout: Option<i64>, now: i64) -> Result<Self, StreamError> {
        if partitions == 0 {
            return Err(StreamError::NoPartitions { partitions });
        }
        if delay < 0 {
            return Err(StreamError::InvalidDelay { delay });
        }
        if let Some(timeout) = idle_timeout.filter(|t| *t <= 0) {
            return Err(StreamError::InvalidIdleTimeout { timeout });
        }
        let state = PartitionState { max_ts: None, last_active: now, idle: false };
        Ok(WatermarkTracker {
            delay,
            idle_timeout,
            now,
            partitions: vec![state; partitions],
            candidate: None,
            watermark: None,
        })
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_idle(&self, partition: usize) -> bool {
        self.partitions.get(partition).is_some_and(|p| p.idle)
    }

    /// Largest event time seen on `partition`.
    pub fn max_event_time(&self, partition: usize) -> Option<i64> {
        self.partitions.get(partition).and_then(|p| p.max_ts)
    }

    /// Records an event at event time `ts` on `partition`, seen at processing time `now`; returns the watermark.
    /// O(1) unless the event raises the partition that held the watermark back (then O(partitions)).
    pub fn observe(&mut self, partition: usize, ts: i64, now: i64) -> Result<Option<i64>, StreamError> {
        let partitions = self.partitions.len();
        self.now = self.now.max(now);
        let delay = self.delay;
        let state =
            self.partitions.get_mut(partition).ok_or(StreamError::PartitionOutOfRange { partition, partitions })?;
        state.last_active = self.now;
        let old = state.max_ts;
        let raised = old.is_none_or(|m| ts > m);
        if raised {
            state.max_ts = Some(ts);
        }
        if state.idle {
            state.idle = false;
            self.recompute();
        } else if raised {
            // Raising a partition moves the minimum only if that partition was (one of) the minimum, or had no
            // event yet.
            let was_min = match (old, self.candidate) {
                (None, _) => true,
                // Still held back by another active partition without events.
                (Some(_), None) => false,
                (Some(m), Some(c)) => m.saturating_sub(delay) <= c,
            };
            if was_min {
                self.recompute();
            }
        }
        Ok(self.watermark)
    }

    /// Moves processing time to `now`, marks partitions idle per the idle timeout, and returns the watermark.
    /// Call it periodically (each batch or timer tick). O(partitions).
    pub fn advance_processing_time(&mut self, now: i64) -> Option<i64> {
        self.now = self.now.max(now);
        if let Some(timeout) = self.idle_timeout {
            let now = self.now;
            for p in &mut self.partitions {
                if !p.idle && now.saturating_sub(p.last_active) >= timeout {
                    p.idle = true;
                }
            }
        }
        self.recompute();
        self.watermark
    }

    fn recompute(&mut self) {
        self.candidate = candidate(self.partitions.iter().map(|p| (p.max_ts, p.idle)), self.delay, self.now);
        if let Some(c) = self.candidate {
            self.watermark = Some(self.watermark.map_or(c, |w| w.max(c)));
        }
    }
}

/// The watermark candidate over input partitions given as `(largest event time, idle)`, at processing time
/// `now`, with out-of-orderness `delay` (see [`WatermarkTracker`] for the definition):
/// - some partition active: `min(max_ts - delay)` over the active ones, or `None` if one has no event yet;
/// - every partition idle, after at least one event: `now - delay`. Event time follows the wall clock, so the
///   last windows close when input stops instead of waiting forever for an event that would close them;
/// - every partition idle and no event ever: `None` (nothing to close, and a first backfill of old events is
///   not late).
pub fn candidate(partitions: impl IntoIterator<Item = (Option<i64>, bool)>, delay: i64, now: i64) -> Option<i64> {
    let mut min: Option<i64> = None;
    let mut any_active = false;
    let mut any_event = false;
    for (max_ts, idle) in partitions {
        any_event |= max_ts.is_some();
        if idle {
            continue;
        }
        any_active = true;
        let c = max_ts?.saturating_sub(delay);
        min = Some(min.map_or(c, |m| m.min(c)));
    }
    if any_active { min } else { any_event.then(|| now.saturating_sub(delay)) }
}

/// How late something is for a window, given the watermark and the allowed lateness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lateness {
    /// The window has not been emitted yet (`watermark < end`, or no watermark).
    OnTime,
    /// The window was emitted (`end <= watermark`) but is kept for `allowed_lateness` more: update its state and
    /// emit a correction.
    Late,
    /// The window's state is gone (`end + allowed_lateness <= watermark`): send the event to the late-events
    /// side output.
    TooLate,
}

impl Lateness {
    /// Classifies an event for the window ending at `window_end`. `allowed_lateness` below 0 counts as 0;
    /// `end + allowed_lateness` is computed without overflow. With
    /// `allowed_lateness == 0` the answer is never [`Lateness::Late`]. The window's state can be dropped once
    /// this returns [`Lateness::TooLate`] for it.
    pub fn classify(window_end: i64, watermark: Option<i64>, allowed_lateness: i64) -> Lateness {
        let Some(w) = watermark else { return Lateness::OnTime };
        if w < window_end {
            Lateness::OnTime
        } else if i128::from(window_end) + i128::from(allowed_lateness.max(0)) > i128::from(w) {
            Lateness::Late
        } else {
            Lateness::TooLate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_watermark_until_every_partition_spoke_or_idled() {
        let mut t = WatermarkTracker::new(2, 5, Some(100), 0).unwrap();
        assert_eq!(t.watermark(), None);
        assert_eq!(t.observe(0, 50, 10).unwrap(), None);
        assert_eq!(t.advance_processing_time(99), None);
        // Partition 1 never spoke: idle at 100 (counted from creation); partition 0 (last event at 10) is not.
        assert_eq!(t.advance_processing_time(100), Some(45));
        assert!(t.is_idle(1) && !t.is_idle(0));
        // Partition 1 comes back behind: holds the watermark (no regression), then lets it move.
        assert_eq!(t.observe(1, 10, 105).unwrap(), Some(45));
        assert_eq!(t.observe(0, 80, 106).unwrap(), Some(45));
        assert_eq!(t.observe(1, 70, 107).unwrap(), Some(65));
        // Everyone idle: the watermark follows processing time, less the out-of-orderness.
        assert_eq!(t.advance_processing_time(1000), Some(995));
        assert!(t.is_idle(0) && t.is_idle(1));
        // A partition coming back behind it holds it.
        assert_eq!(t.observe(0, 500, 1001).unwrap(), Some(995));
        assert!(t.observe(2, 0, 0).is_err());
    }

    #[test]
    fn idle_everywhere_follows_the_clock_only_after_an_event() {
        assert_eq!(candidate([(None, true), (None, true)], 5, 1000), None);
        assert_eq!(candidate([(Some(10), true), (None, true)], 5, 1000), Some(995));
        assert_eq!(candidate([(Some(10), false), (None, true)], 5, 1000), Some(5));
        assert_eq!(candidate([(Some(10), false), (None, false)], 5, 1000), None);
        assert_eq!(candidate([(Some(i64::MIN), true)], 5, i64::MIN), Some(i64::MIN));
        let mut t = WatermarkTracker::new(1, 0, Some(10), 0).unwrap();
        assert_eq!(t.advance_processing_time(100), None);
    }

    #[test]
    fn config_is_validated() {
        assert!(WatermarkTracker::new(0, 0, None, 0).is_err());
        assert_eq!(
            WatermarkTracker::new(1, -1, None, 0).unwrap_err().to_string(),
            "watermark delay must be >= 0, got -1"
        );
        assert!(WatermarkTracker::new(1, 0, Some(0), 0).is_err());
    }

    #[test]
    fn lateness() {
        assert_eq!(Lateness::classify(100, None, 0), Lateness::OnTime);
        assert_eq!(Lateness::classify(100, Some(99), 0), Lateness::OnTime);
        assert_eq!(Lateness::classify(100, Some(100), 0), Lateness::TooLate);
        assert_eq!(Lateness::classify(100, Some(100), 10), Lateness::Late);
        assert_eq!(Lateness::classify(100, Some(109), 10), Lateness::Late);
        assert_eq!(Lateness::classify(100, Some(110), 10), Lateness::TooLate);
        assert_eq!(Lateness::classify(i64::MAX, Some(i64::MAX), i64::MAX), Lateness::Late);
    }
}
