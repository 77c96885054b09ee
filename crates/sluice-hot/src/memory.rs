//! The in-process adapter: one windowed job's last N minutes of results (open windows included) in memory, for
//! HTTP handlers that must answer in well under a millisecond while the job keeps upserting.
//!
//! Three indexes share each row (keys are `Arc<str>`, rows `Arc<Map>`, so a row is stored once):
//! - by `(window_start, key, window_end)`: range queries over all keys, already in answer order;
//! - by key, then `(window_start, window_end)`: key-filtered queries and the newest window per key;
//! - by `(window_end, window_start, key)`: eviction is a prefix.
//!
//! A window `[s, e)` intersects `[from, to)` when `s < to` and `e > from`; scanning starts at `from` minus the
//! longest window held, so queries cost O(log n + rows returned) for fixed-size (tumbling, hopping) windows,
//! plus the few skipped short sessions otherwise.
//!
//! Readers take a read lock only to clone `Arc`s. Writers hold the write lock for at most [`CHUNK`] rows at a
//! time, and rows replaced or evicted are dropped after it is released, so a large batch or a jump in time
//! never stalls readers. A reader may see a batch half applied; each row is always whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use crate::{HotAnswer, HotBatch, HotError, HotReader, HotResults, HotStore, ResultRow, Row};

/// Rows applied (or evicted) per write-lock hold: 100-200 µs with 100k rows held. Measured on 2 cores, 5,000
/// reads/s against 5,000-row upserts every 100 ms: read P99 ~0.13 ms, P99.9 ~0.22 ms.
const CHUNK: usize = 64;

/// The last `retention_ms` of a job's results; shared as `Arc<MemoryHot>`.
pub struct MemoryHot {
    retention_ms: i64,
    index: RwLock<Index>,
    watermark: AtomicI64,
}

#[derive(Default)]
struct Index {
    by_window: BTreeMap<(i64, Arc<str>, i64), Row>,
    by_key: BTreeMap<Arc<str>, BTreeMap<(i64, i64), Row>>,
    by_end: BTreeSet<(i64, i64, Arc<str>)>,
    /// How many rows have each window length: the longest bounds how far before `from` a range scan starts.
    lengths: BTreeMap<i128, usize>,
    /// The newest `window_end` upserted since the last `clear`: eviction is relative to it, not to a clock.
    newest_end: Option<i64>,
    /// The smallest key, for range bounds over `(start, key, end)`.
    empty: Arc<str>,
}

impl MemoryHot {
    pub fn new(retention_ms: i64) -> Self {
        MemoryHot { retention_ms, index: RwLock::new(Index::default()), watermark: AtomicI64::new(i64::MIN) }
    }

    /// Inserts or replaces rows by `(window_start, window_end, key)` (the last of duplicates wins), then evicts
    /// every row whose window ended `retention_ms` or more before the newest window end seen.
    pub fn upsert(&self, rows: Vec<ResultRow>) {
        self.insert(rows, true);
    }

    /// Like `upsert`, keeping rows already present.
    pub fn insert_absent(&self, rows: Vec<ResultRow>) {
        self.insert(rows, false);
    }

    fn insert(&self, rows: Vec<ResultRow>, replace: bool) {
        let Some(batch_end) = rows.iter().map(|r| r.window_end).max() else { return };
        // Keys become `Arc`s before the lock is taken.
        let rows: Vec<_> =
            rows.into_iter().map(|r| (r.window_start, r.window_end, Arc::<str>::from(r.key), r.row)).collect();
        let mut rows = rows.into_iter();
        {
            let mut index = self.index.write();
            index.newest_end = Some(index.newest_end.map_or(batch_end, |n| n.max(batch_end)));
        }
        while rows.len() > 0 {
            let mut index = self.index.write();
            let cutoff = index.cutoff(self.retention_ms);
            let replaced: Vec<Row> = (&mut rows)
                .take(CHUNK)
                .filter(|&(_, end, _, _)| end > cutoff)
                .filter_map(|(start, end, key, row)| {
                    if replace || !index.contains(start, end, &key) { index.insert(start, end, key, row) } else { None }
                })
                .collect();
            release(index);
            drop(replaced);
        }
        self.evict();
    }

    /// Removes one row (a session window that merged into another); absent rows are ignored.
    pub fn remove(&self, window_start: i64, window_end: i64, key: &str) {
        let removed = self.index.write().remove(window_start, window_end, key);
        drop(removed);
    }

    /// Rows of windows intersecting `[from, to)` (unbounded where `None`; nothing when `from >= to`), of one key
    /// or all, ordered by window start, then key, then window end; at most `limit`.
    pub fn query(&self, key: Option<&str>, from: Option<i64>, to: Option<i64>, limit: usize) -> Vec<Row> {
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Vec::new();
        }
        Self::query_index(&self.index.read(), key, from, to, limit)
    }

    fn query_index(index: &Index, key: Option<&str>, from: Option<i64>, to: Option<i64>, limit: usize) -> Vec<Row> {
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Vec::new();
        }
        // Every window ends at most `longest` after it starts, so one ending after `from` starts after
        // `from - longest` (unbounded where that is below i64::MIN); and `low <= to`, which `range` needs.
        let longest = index.longest().max(0);
        let low = from.and_then(|f| i64::try_from(i128::from(f) - longest + 1).ok());
        let intersects = |end: i64| from.is_none_or(|f| end > f);
        if let Some(key) = key {
            let Some(windows) = index.by_key.get(key) else { return Vec::new() };
            let range = (
                low.map_or(Bound::Unbounded, |s| Bound::Included((s, i64::MIN))),
                to.map_or(Bound::Unbounded, |t| Bound::Excluded((t, i64::MIN))),
            );
            windows.range(range).filter(|((_, end), _)| intersects(*end)).take(limit).map(|(_, r)| r.clone()).collect()
        } else {
            let range = (
                low.map_or(Bound::Unbounded, |s| Bound::Included((s, index.empty.clone(), i64::MIN))),
                to.map_or(Bound::Unbounded, |t| Bound::Excluded((t, index.empty.clone(), i64::MIN))),
            );
            let rows = index.by_window.range(range).filter(|((_, _, end), _)| intersects(*end));
            rows.take(limit).map(|(_, r)| r.clone()).collect()
        }
    }

    /// Per key, the row of its newest window (largest start, then largest end): of one key, or of every key
    /// ordered by key.
    pub fn latest(&self, key: Option<&str>) -> Vec<Row> {
        let index = self.index.read();
        let newest = |windows: &BTreeMap<(i64, i64), Row>| windows.last_key_value().map(|(_, r)| r.clone());
        match key {
            Some(key) => index.by_key.get(key).and_then(newest).into_iter().collect(),
            None => index.by_key.values().filter_map(newest).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.read().by_window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every row and the newest window end seen (for a replay).
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.index.write());
        self.watermark.store(i64::MIN, Ordering::Relaxed);
        drop(old);
    }

    fn watermark(&self) -> Option<i64> {
        Some(self.watermark.load(Ordering::Relaxed)).filter(|&w| w != i64::MIN)
    }

    /// Like [`query`](Self::query), restricted to the rows the hot path is guaranteed to hold: those ending after
    /// the eviction cutoff (the newest window end minus the retention). Returns the cutoff too (`None` before any
    /// row arrived), read under the same lock, so a reader can get every older window elsewhere without a gap or
    /// an overlap.
    pub fn query_recent(
        &self,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> (Option<i64>, Vec<Row>) {
        let index = self.index.read();
        let cutoff = index.newest_end.map(|_| index.cutoff(self.retention_ms));
        let from = match (from, cutoff) {
            (Some(f), Some(c)) => Some(f.max(c)),
            (f, c) => f.or(c),
        };
        (cutoff, Self::query_index(&index, key, from, to, limit))
    }

    pub fn oldest_window_start(&self) -> Option<i64> {
        self.index.read().by_window.first_key_value().map(|((start, _, _), _)| *start)
    }

    /// Evicts in chunks, dropping each chunk's rows outside the lock.
    fn evict(&self) {
        let mut more = true;
        while more {
            let mut index = self.index.write();
            let cutoff = index.cutoff(self.retention_ms);
            let mut evicted = Vec::with_capacity(CHUNK);
            for _ in 0..CHUNK {
                more = index.by_end.first().is_some_and(|(end, ..)| *end <= cutoff);
                if !more {
                    break;
                }
                // Popped first, so eviction progresses even if the indexes ever disagreed.
                if let Some((end, start, key)) = index.by_end.pop_first() {
                    evicted.extend(index.remove(start, end, &key));
                }
            }
            release(index);
            drop(evicted);
        }
    }
}

/// Ends a writer's hold so that waiting readers go first: a fair unlock hands the lock to parked readers, and
/// yielding lets those still spinning get it before this writer retakes it (without both, a writer looping
/// over chunks starved readers for whole batches: milliseconds).
fn release(index: RwLockWriteGuard<'_, Index>) {
    RwLockWriteGuard::unlock_fair(index);
    std::thread::yield_now();
}

impl std::fmt::Debug for MemoryHot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHot").field("retention_ms", &self.retention_ms).field("rows", &self.len()).finish()
    }
}

#[async_trait::async_trait]
impl HotReader for MemoryHot {
    async fn recent(
        &self,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<HotAnswer, HotError> {
        let (cutoff, rows) = self.query_recent(key, from, to, limit);
        Ok(HotAnswer { rows, cutoff, watermark: self.watermark() })
    }

    async fn latest(&self, key: Option<&str>) -> Result<HotAnswer, HotError> {
        let cutoff = {
            let index = self.index.read();
            index.newest_end.map(|_| index.cutoff(self.retention_ms))
        };
        Ok(HotAnswer { rows: MemoryHot::latest(self, key), cutoff, watermark: self.watermark() })
    }
}

#[async_trait::async_trait]
impl HotResults for MemoryHot {
    async fn write(&self, batch: HotBatch) {
        for (start, end, key) in &batch.removes {
            self.remove(*start, *end, key);
        }
        self.upsert(batch.upserts);
        if let Some(w) = batch.watermark {
            self.watermark.fetch_max(w, Ordering::Relaxed);
        }
    }

    async fn fill(&self, rows: Vec<ResultRow>) {
        self.insert_absent(rows);
    }

    async fn clear(&self) {
        MemoryHot::clear(self);
    }

    async fn flush(&self) {}

    async fn lost(&self) {
        std::future::pending::<()>().await
    }

    fn len(&self) -> usize {
        MemoryHot::len(self)
    }
}

/// Every job's hot results in this process.
#[derive(Debug, Default)]
pub struct MemoryHotStore {
    jobs: Mutex<HashMap<String, Arc<MemoryHot>>>,
}

impl MemoryHotStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl HotStore for MemoryHotStore {
    fn open(&self, job: &str, retention_ms: i64) -> Arc<dyn HotResults> {
        let mut jobs = self.jobs.lock();
        match jobs.get(job) {
            Some(hot) if hot.retention_ms == retention_ms => hot.clone(),
            _ => {
                let hot = Arc::new(MemoryHot::new(retention_ms));
                jobs.insert(job.to_string(), hot.clone());
                hot
            }
        }
    }

    async fn find(&self, job: &str) -> Result<Option<Arc<dyn HotReader>>, HotError> {
        Ok(self.jobs.lock().get(job).map(|h| h.clone() as Arc<dyn HotReader>))
    }

    async fn forget(&self, job: &str) -> Result<(), HotError> {
        let removed = self.jobs.lock().remove(job);
        drop(removed);
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

impl Index {
    /// Rows ending at or before this are evicted.
    fn cutoff(&self, retention_ms: i64) -> i64 {
        self.newest_end.map_or(i64::MIN, |n| n.saturating_sub(retention_ms))
    }

    fn longest(&self) -> i128 {
        self.lengths.last_key_value().map_or(0, |(len, _)| *len)
    }

    /// Inserts or replaces; returns the replaced row, to be dropped outside the lock.
    fn insert(&mut self, start: i64, end: i64, key: Arc<str>, row: Row) -> Option<Row> {
        let key = match self.by_key.get_key_value(&*key) {
            Some((existing, _)) => existing.clone(),
            None => {
                self.by_key.insert(key.clone(), BTreeMap::new());
                key
            }
        };
        let replaced = self.by_window.insert((start, key.clone(), end), row.clone());
        if let Some(windows) = self.by_key.get_mut(&key) {
            windows.insert((start, end), row);
        }
        if replaced.is_none() {
            self.by_end.insert((end, start, key));
            *self.lengths.entry(length(start, end)).or_default() += 1;
        }
        replaced
    }

    fn contains(&self, start: i64, end: i64, key: &str) -> bool {
        self.by_key.get(key).is_some_and(|w| w.contains_key(&(start, end)))
    }

    /// Removes from every index; returns the row, to be dropped outside the lock.
    fn remove(&mut self, start: i64, end: i64, key: &str) -> Option<Row> {
        let (key, windows) = self.by_key.get_key_value(key)?;
        if !windows.contains_key(&(start, end)) {
            return None;
        }
        let key = key.clone();
        if let Some(windows) = self.by_key.get_mut(&key) {
            windows.remove(&(start, end));
            if windows.is_empty() {
                self.by_key.remove(&key);
            }
        }
        self.by_end.remove(&(end, start, key.clone()));
        let len = length(start, end);
        if let Some(count) = self.lengths.get_mut(&len) {
            *count -= 1;
            if *count == 0 {
                self.lengths.remove(&len);
            }
        }
        self.by_window.remove(&(start, key, end))
    }
}

/// `end - start`, which can exceed i64 (a window from i64::MIN to i64::MAX).
fn length(start: i64, end: i64) -> i128 {
    i128::from(end) - i128::from(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    // The checks every adapter passes run on this one in `tests/conformance.rs`; these are its own.
    use crate::conformance::{id, ids, row};

    #[test]
    fn evicts_relative_to_the_newest_window_end() {
        let hot = MemoryHot::new(100);
        hot.upsert(vec![row(0, 100, "a", 1), row(50, 150, "a", 1), row(100, 200, "b", 1)]);
        // newest end 200, cutoff 100: the window ending exactly at the cutoff goes.
        assert_eq!(ids(&hot.query(None, None, None, 10)), vec![id(50, "a", 1), id(100, "b", 1)]);
        assert_eq!(hot.oldest_window_start(), Some(50));
        // A row already past retention is not kept, and an older batch does not move the cutoff back.
        hot.upsert(vec![row(-50, 90, "c", 1)]);
        assert_eq!(hot.len(), 2);
        hot.upsert(vec![row(1_000, 1_100, "a", 1)]);
        assert_eq!(ids(&hot.latest(None)), vec![id(1_000, "a", 1)]);
        hot.clear();
        assert!(hot.is_empty());
        assert_eq!(hot.oldest_window_start(), None);
        // After clear the cutoff starts over.
        hot.upsert(vec![row(0, 100, "a", 1)]);
        assert_eq!(hot.len(), 1);
    }

    #[test]
    fn extreme_times_neither_overflow_nor_panic() {
        let hot = MemoryHot::new(i64::MAX);
        hot.upsert(vec![row(i64::MIN, i64::MAX, "all", 1), row(i64::MAX - 1, i64::MAX, "end", 2), row(5, 3, "odd", 3)]);
        assert_eq!(hot.len(), 3);
        assert_eq!(
            ids(&hot.query(None, Some(i64::MAX - 1), None, 10)),
            vec![id(i64::MIN, "all", 1), id(i64::MAX - 1, "end", 2)]
        );
        assert_eq!(hot.query(None, Some(i64::MIN), Some(i64::MAX), 10).len(), 3);
        assert!(hot.query(None, Some(i64::MAX), Some(i64::MIN), 10).is_empty());
        assert!(hot.query(Some("all"), Some(7), Some(7), 10).is_empty());
        assert_eq!(ids(&hot.query(Some("odd"), Some(2), Some(6), 10)), vec![id(5, "odd", 3)]);
        let none_kept = MemoryHot::new(-5);
        none_kept.upsert(vec![row(0, 10, "a", 1)]);
        assert!(none_kept.is_empty());
    }

    #[test]
    fn readers_run_while_a_writer_upserts() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<MemoryHot>();
        let hot = Arc::new(MemoryHot::new(5_000));
        let writer = {
            let hot = hot.clone();
            std::thread::spawn(move || {
                for batch in 0..200i64 {
                    hot.upsert((0..50).map(|k| row(batch * 100, batch * 100 + 100, &format!("k{k}"), batch)).collect());
                }
            })
        };
        while !writer.is_finished() {
            let rows = hot.query(None, Some(0), None, 100);
            assert!(ids(&rows).windows(2).all(|w| (w[0].0, &w[0].1) <= (w[1].0, &w[1].1)));
            // Retention keeps 50 windows of 50 keys; a reader may catch a batch half applied, never more.
            assert!(hot.len() <= 50 * 51);
            assert!(hot.latest(None).len() <= 50);
        }
        writer.join().unwrap();
        assert_eq!(hot.len(), 50 * 50);
        assert_eq!(hot.oldest_window_start(), Some(150 * 100));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(Vec<(i64, i64, u8)>),
        Remove(i64, i64, u8),
        Query(Option<u8>, Option<i64>, Option<i64>, usize),
        Latest(Option<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0u8..4;
        // Start and length: session-like windows of many lengths, overlapping and sharing starts.
        let window = (0i64..40, 1i64..15, key.clone()).prop_map(|(s, l, k)| (s, s + l, k));
        prop_oneof![
            4 => prop::collection::vec(window, 0..12).prop_map(Op::Upsert),
            2 => (0i64..40, 1i64..15, key.clone()).prop_map(|(s, l, k)| Op::Remove(s, s + l, k)),
            3 => (prop::option::of(key.clone()), prop::option::of(-5i64..60), prop::option::of(-5i64..60), 0usize..20)
                .prop_map(|(k, f, t, n)| Op::Query(k, f, t, n)),
            1 => prop::option::of(key).prop_map(Op::Latest),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(ops in prop::collection::vec(op(), 1..40), retention in 5i64..50) {
            let hot = MemoryHot::new(retention);
            // (start, end, key, v)
            let mut model: Vec<(i64, i64, String, i64)> = Vec::new();
            let mut newest: Option<i64> = None;
            let mut v = 0;
            for op in ops {
                match op {
                    Op::Upsert(windows) => {
                        let mut rows = Vec::new();
                        for (s, e, k) in windows {
                            v += 1;
                            rows.push(row(s, e, &format!("k{k}"), v));
                        }
                        for r in &rows {
                            model.retain(|m| (m.0, m.1, &m.2) != (r.window_start, r.window_end, &r.key));
                            model.push((r.window_start, r.window_end, r.key.clone(), r.row["v"].as_i64().unwrap()));
                            newest = Some(newest.map_or(r.window_end, |n| n.max(r.window_end)));
                        }
                        if let Some(n) = newest {
                            model.retain(|m| m.1 > n - retention);
                        }
                        hot.upsert(rows);
                    }
                    Op::Remove(s, e, k) => {
                        let key = format!("k{k}");
                        model.retain(|m| (m.0, m.1, &m.2) != (s, e, &key));
                        hot.remove(s, e, &key);
                    }
                    Op::Query(k, from, to, limit) => {
                        let key = k.map(|k| format!("k{k}"));
                        let mut expected: Vec<_> = model.iter()
                            .filter(|m| key.as_ref().is_none_or(|k| &m.2 == k))
                            .filter(|m| to.is_none_or(|t| m.0 < t) && from.is_none_or(|f| m.1 > f))
                            .filter(|_| !matches!((from, to), (Some(f), Some(t)) if f >= t))
                            .collect();
                        expected.sort_by(|a, b| (a.0, &a.2, a.1).cmp(&(b.0, &b.2, b.1)));
                        let expected: Vec<_> =
                            expected.into_iter().take(limit).map(|m| (m.0, m.2.clone(), m.3)).collect();
                        prop_assert_eq!(ids(&hot.query(key.as_deref(), from, to, limit)), expected);
                    }
                    Op::Latest(k) => {
                        let key = k.map(|k| format!("k{k}"));
                        let mut newest_per_key: BTreeMap<&str, &(i64, i64, String, i64)> = BTreeMap::new();
                        for m in model.iter().filter(|m| key.as_ref().is_none_or(|k| &m.2 == k)) {
                            let slot = newest_per_key.entry(&m.2).or_insert(m);
                            if (m.0, m.1) > (slot.0, slot.1) {
                                *slot = m;
                            }
                        }
                        let expected: Vec<_> = newest_per_key.values().map(|m| (m.0, m.2.clone(), m.3)).collect();
                        prop_assert_eq!(ids(&hot.latest(key.as_deref())), expected);
                    }
                }
                prop_assert_eq!(hot.len(), model.len());
                prop_assert_eq!(hot.oldest_window_start(), model.iter().map(|m| m.0).min());
            }
        }
    }
}
