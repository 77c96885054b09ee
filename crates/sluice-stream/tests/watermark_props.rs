//! The watermark tracker against a from-scratch model of its definition (see `WatermarkTracker` docs).

use proptest::prelude::*;
use sluice_stream::watermark::candidate;
use sluice_stream::{Lateness, WatermarkTracker};

#[derive(Debug, Clone)]
enum Op {
    Observe { partition: usize, ts: i64, dt: i64 },
    Advance { dt: i64 },
}

fn op(partitions: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..partitions, -50i64..200, -2i64..15).prop_map(|(partition, ts, dt)| Op::Observe { partition, ts, dt }),
        1 => (-2i64..40).prop_map(|dt| Op::Advance { dt }),
    ]
}

fn case() -> impl Strategy<Value = (usize, i64, Option<i64>, Vec<Op>)> {
    (1usize..5).prop_flat_map(|n| (Just(n), 0i64..20, prop::option::of(1i64..40), prop::collection::vec(op(n), 0..120)))
}

/// Per partition: every event as (ts, processing time); idleness as decided at the last advance.
struct Model {
    events: Vec<Vec<i64>>,
    last_active: Vec<i64>,
    idle: Vec<bool>,
    now: i64,
    watermark: Option<i64>,
}

impl Model {
    fn candidate(&self, delay: i64) -> Option<i64> {
        let active: Vec<usize> = (0..self.events.len()).filter(|&p| !self.idle[p]).collect();
        if active.is_empty() {
            // All idle: processing time leads, once anything was seen.
            return self.events.iter().any(|e| !e.is_empty()).then(|| self.now - delay);
        }
        let mut min = i64::MAX;
        for p in active {
            let max = *self.events[p].iter().max()?;
            min = min.min(max - delay);
        }
        Some(min)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tracker_matches_model((n, delay, idle_timeout, ops) in case()) {
        let start = 1_000;
        let mut tracker = WatermarkTracker::new(n, delay, idle_timeout, start).unwrap();
        let mut model = Model {
            events: vec![Vec::new(); n],
            last_active: vec![start; n],
            idle: vec![false; n],
            now: start,
            watermark: None,
        };
        let mut clock = start;
        let mut previous: Option<i64> = None;
        for op in ops {
            let got = match op {
                Op::Observe { partition, ts, dt } => {
                    clock += dt;
                    model.now = model.now.max(clock);
                    model.events[partition].push(ts);
                    model.last_active[partition] = model.now;
                    model.idle[partition] = false;
                    tracker.observe(partition, ts, clock).unwrap()
                }
                Op::Advance { dt } => {
                    clock += dt;
                    model.now = model.now.max(clock);
                    if let Some(timeout) = idle_timeout {
                        for p in 0..n {
                            if model.now - model.last_active[p] >= timeout {
                                model.idle[p] = true;
                            }
                        }
                    }
                    tracker.advance_processing_time(clock)
                }
            };
            if let Some(c) = model.candidate(delay) {
                model.watermark = Some(model.watermark.map_or(c, |w| w.max(c)));
            }
            prop_assert_eq!(got, model.watermark);
            prop_assert_eq!(tracker.watermark(), got);
            for p in 0..n {
                prop_assert_eq!(tracker.is_idle(p), model.idle[p]);
            }
            // Monotone, and never None again once set.
            if let Some(prev) = previous {
                prop_assert!(got.is_some_and(|w| w >= prev));
            }
            previous = got;
        }
        // Without idleness, the definition is just min over partitions of (max - delay), once all have spoken.
        if idle_timeout.is_none() {
            let expected = model.events.iter().map(|e| e.iter().max().map(|m| m - delay)).collect::<Option<Vec<_>>>();
            prop_assert_eq!(tracker.watermark(), expected.and_then(|v| v.into_iter().min()));
        }
    }

    #[test]
    fn candidate_is_the_slowest_active_partition_or_the_clock(
        parts in prop::collection::vec((prop::option::of(-1000i64..1000), any::<bool>()), 1..6),
        delay in 0i64..50,
        now in -2000i64..2000,
    ) {
        let got = candidate(parts.iter().copied(), delay, now);
        let active: Vec<Option<i64>> = parts.iter().filter(|(_, idle)| !idle).map(|(m, _)| *m).collect();
        if active.is_empty() {
            let any_event = parts.iter().any(|(m, _)| m.is_some());
            prop_assert_eq!(got, any_event.then_some(now - delay));
        } else if active.iter().any(Option::is_none) {
            prop_assert_eq!(got, None);
        } else {
            let min = active.iter().flatten().min().copied().unwrap();
            prop_assert_eq!(got, Some(min - delay));
            // Never ahead of what an active partition vouches for.
            for m in active.iter().flatten() {
                prop_assert!(got.unwrap() <= m - delay);
            }
        }
    }

    #[test]
    fn lateness_partitions_the_timeline(end in -1000i64..1000, watermark in prop::option::of(-2000i64..2000), allowed in -5i64..500) {
        let class = Lateness::classify(end, watermark, allowed);
        let expected = match watermark {
            None => Lateness::OnTime,
            Some(w) if w < end => Lateness::OnTime,
            Some(w) if w < end + allowed.max(0) => Lateness::Late,
            Some(_) => Lateness::TooLate,
        };
        prop_assert_eq!(class, expected);
    }
}
