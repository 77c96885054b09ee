//! Time partitioning of sink output, shared by the store's chunks and the search index's partitions (ADR 0011).
//!
//! A partition is a half-open event-time range `[start, end)`; partitions never overlap. Widths follow the data,
//! not the clock:
//! - a new partition is the `max_width`-aligned slot holding its first event, clipped to the gap between its
//!   neighbours, so sparse or old data (a year of history) lands in a few wide partitions;
//! - a partition that reaches `target_rows` is *sealed*: its end moves down to just past the newest event it
//!   holds (but never below `min_width` from its start), and later events start a new partition in the freed
//!   gap, so dense data gets partitions of about `target_rows` rows, and live traffic at least `min_width`
//!   (an hour) per partition, as a fixed hourly layout would.
//!
//! Late events go to whichever partition already covers their time, sealed or not.
//!
//! Bound (checked by the property test): within one `max_width` slot every unsealed partition fills a gap that a
//! seal opened (or the whole slot), so `partitions <= slots touched + 2 * sealed`, and a partition is sealed only
//! after holding `target_rows`, so `sealed <= rows / target_rows`.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Default widest partition: four weeks (a year of sparse history is 14 partitions).
pub const DEFAULT_MAX_WIDTH_MS: i64 = 28 * 86_400_000;
/// A seal never makes a partition narrower than this (nor a retention its `max_width`).
pub const MIN_WIDTH_MS: i64 = 3_600_000;

/// How wide partitions may grow and when they are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPolicy {
    /// Widest a partition may be (ms).
    pub max_width_ms: i64,
    /// Narrowest a seal may leave a partition (ms).
    pub min_width_ms: i64,
    /// Rows after which a partition is sealed.
    pub target_rows: u64,
}

impl PartitionPolicy {
    /// A policy whose widest partition is at most an eighth of `retention_ms` (but at least an hour), so retention,
    /// which drops whole partitions, keeps data at most ~12% longer than asked. Seals stop at an hour, or at
    /// `max_width_ms` if that is narrower.
    pub fn for_retention(max_width_ms: i64, target_rows: u64, retention_ms: Option<i64>) -> PartitionPolicy {
        let cap = retention_ms.map_or(i64::MAX, |r| (r / 8).max(MIN_WIDTH_MS));
        let max_width_ms = max_width_ms.min(cap).max(1);
        PartitionPolicy { max_width_ms, min_width_ms: MIN_WIDTH_MS.min(max_width_ms), target_rows: target_rows.max(1) }
    }

    /// The range of the partition holding `t`: an existing one (`parts` maps start to an entry, `end` reads an
    /// entry's end) if one covers `t`, else the aligned slot of `t` clipped to the gap it falls in.
    /// `i64::MAX` itself is placed as `i64::MAX - 1` (no half-open range holds it).
    pub fn locate<V>(&self, parts: &BTreeMap<i64, V>, end: impl Fn(&V) -> i64, t: i64) -> (i64, i64) {
        let t = t.min(i64::MAX - 1);
        let prev = parts.range(..=t).next_back();
        if let Some((&s, v)) = prev
            && t < end(v)
        {
            return (s, end(v));
        }
        let width = self.max_width_ms.max(1);
        let mut start = t.div_euclid(width).saturating_mul(width);
        let mut stop = start.saturating_add(width);
        if let Some((_, v)) = prev {
            start = start.max(end(v));
        }
        if let Some((&s, _)) = parts.range((Bound::Excluded(t), Bound::Unbounded)).next() {
            stop = stop.min(s);
        }
        if stop <= t {
            // Only at the very end of the i64 range.
            stop = t + 1;
        }
        (start, stop)
    }

    /// The end a partition `[start, end)` holding `rows` rows between `min_time` and `max_time` should have now:
    /// once it holds `target_rows`, moved down to `max_time + 1` or `min_time + min_width`, whichever is later;
    /// else unchanged. Never earlier than `max_time + 1`, so every row stays inside.
    pub fn sealed_end(&self, start: i64, end: i64, rows: u64, min_time: i64, max_time: i64) -> i64 {
        if rows < self.target_rows {
            return end;
        }
        let floor = max_time.saturating_add(1).max(min_time.max(start).saturating_add(self.min_width_ms));
        end.min(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Part {
        end: i64,
        rows: u64,
        min: i64,
        max: i64,
        sealed: bool,
    }

    /// Feeds batches of times through locate and seals after each batch, as the sinks do at a flush or commit.
    fn simulate(policy: PartitionPolicy, batches: &[Vec<i64>]) -> BTreeMap<i64, Part> {
        let mut parts: BTreeMap<i64, Part> = BTreeMap::new();
        for batch in batches {
            for &t in batch {
                let t = t.min(i64::MAX - 1);
                let (s, e) = policy.locate(&parts, |p| p.end, t);
                assert!(s <= t && t < e, "{t} placed in [{s}, {e})");
                let p = parts.entry(s).or_insert(Part { end: e, rows: 0, min: t, max: t, sealed: false });
                p.rows += 1;
                p.min = p.min.min(t);
                p.max = p.max.max(t);
            }
            for (&s, p) in parts.iter_mut() {
                let end = policy.sealed_end(s, p.end, p.rows, p.min, p.max);
                if end < p.end {
                    p.end = end;
                    p.sealed = true;
                }
            }
        }
        parts
    }

    #[test]
    fn a_year_of_sparse_history_makes_few_partitions() {
        let policy = PartitionPolicy::for_retention(DEFAULT_MAX_WIDTH_MS, 2_000_000, None);
        let year = 365 * 86_400_000i64;
        let times: Vec<i64> = (0..340_000i64).map(|i| 1_700_000_000_000 + i * (year / 340_000)).collect();
        let parts = simulate(policy, &times.chunks(4096).map(|c| c.to_vec()).collect::<Vec<_>>());
        assert!(parts.len() <= 15, "{} partitions", parts.len());
    }

    #[test]
    fn dense_data_is_cut_at_the_target() {
        let policy = PartitionPolicy { max_width_ms: DEFAULT_MAX_WIDTH_MS, min_width_ms: 1, target_rows: 1000 };
        // 10 events per ms for 1 s: 10,000 rows in one slot, sealed about every 1,000.
        let times: Vec<i64> = (0..10_000i64).map(|i| 1_000_000 + i / 10).collect();
        let parts = simulate(policy, &times.chunks(500).map(|c| c.to_vec()).collect::<Vec<_>>());
        assert!((9..=11).contains(&parts.len()), "{} partitions", parts.len());
        assert!(parts.values().filter(|p| p.sealed).all(|p| (1000..1500).contains(&p.rows)));
    }

    #[test]
    fn live_traffic_keeps_at_least_the_minimum_width() {
        let policy = PartitionPolicy::for_retention(DEFAULT_MAX_WIDTH_MS, 1000, None);
        // 3 hours at 10 events/s: sealed every hour, not every 1,000 events.
        let times: Vec<i64> = (0..108_000i64).map(|i| 1_700_002_800_000 + i * 100).collect();
        let parts = simulate(policy, &times.chunks(1000).map(|c| c.to_vec()).collect::<Vec<_>>());
        assert_eq!(parts.len(), 3, "{:?}", parts.iter().map(|(s, p)| (s, p.end, p.rows)).collect::<Vec<_>>());
        assert!(parts.values().all(|p| p.max - p.min >= MIN_WIDTH_MS - 1000));
    }

    #[test]
    fn retention_caps_the_width() {
        let p = PartitionPolicy::for_retention(DEFAULT_MAX_WIDTH_MS, 10, Some(7 * 86_400_000));
        assert_eq!(p.max_width_ms, 7 * 86_400_000 / 8);
        let p = PartitionPolicy::for_retention(DEFAULT_MAX_WIDTH_MS, 10, Some(60_000));
        assert_eq!(p.max_width_ms, MIN_WIDTH_MS);
        assert_eq!(PartitionPolicy::for_retention(3_600_000, 10, None).max_width_ms, 3_600_000);
    }

    fn times() -> impl Strategy<Value = Vec<Vec<i64>>> {
        let t = prop_oneof![
            // Wildly spread (and negative) times.
            any::<i64>().prop_map(|t| t / 4),
            // Ten years at second resolution.
            (0i64..315_360_000).prop_map(|s| 1_600_000_000_000 + s * 1000),
            // A dense burst.
            (0i64..5_000).prop_map(|ms| 1_700_000_000_000 + ms),
            Just(i64::MAX - 1),
            Just(i64::MIN),
        ];
        proptest::collection::vec(proptest::collection::vec(t, 1..200), 1..20)
    }

    proptest! {
        #[test]
        fn partitions_never_overlap_and_stay_bounded(
            batches in times(),
            width in prop_oneof![Just(1i64), Just(1000), Just(3_600_000), Just(DEFAULT_MAX_WIDTH_MS)],
            min_width in prop_oneof![Just(1i64), Just(500), Just(3_600_000)],
            target in 1u64..300,
        ) {
            let policy = PartitionPolicy { max_width_ms: width, min_width_ms: min_width.min(width), target_rows: target };
            let parts = simulate(policy, &batches);
            let mut prev_end = i64::MIN;
            for (&s, p) in &parts {
                prop_assert!(s < p.end, "empty partition [{s}, {})", p.end);
                prop_assert!(s >= prev_end, "[{s}, {}) overlaps the previous one ending at {prev_end}", p.end);
                prop_assert!(p.max < p.end && p.max >= s);
                prev_end = p.end;
            }
            // Every time lies in exactly one partition.
            let all: Vec<i64> = batches.iter().flatten().map(|t| (*t).min(i64::MAX - 1)).collect();
            for &t in &all {
                let n = parts.iter().filter(|(s, p)| **s <= t && t < p.end).count();
                prop_assert_eq!(n, 1);
            }
            let rows: u64 = parts.values().map(|p| p.rows).sum();
            prop_assert_eq!(rows, all.len() as u64);
            let sealed = parts.values().filter(|p| p.sealed).count();
            prop_assert!(sealed as u64 <= rows / target);
            let mut slots: Vec<i64> = all.iter().map(|t| t.div_euclid(width)).collect();
            slots.sort_unstable();
            slots.dedup();
            prop_assert!(parts.len() <= slots.len() + 2 * sealed, "{} partitions, {} slots, {sealed} sealed", parts.len(), slots.len());
        }
    }
}
