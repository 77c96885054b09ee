//! The checks every hot-results adapter passes, one test each on a fresh store: `hot_conformance_suite!(make)`
//! expands to a `#[tokio::test]` per check calling `make().await` for a [`Fresh`] store. Reads come after
//! [`HotResults::flush`], never after a sleep, so an adapter may apply writes asynchronously.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::memory::MemoryHot;
use crate::{HotBatch, HotReader, HotResults, HotStore, ResultRow, Row};

type Lose = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A store no other test uses.
pub struct Fresh {
    pub store: Arc<dyn HotStore>,
    lose: Option<Lose>,
    _guard: Box<dyn Send + Sync>,
}

impl Fresh {
    pub fn new(store: Arc<dyn HotStore>, guard: impl Send + Sync + 'static) -> Self {
        Fresh { store, lose: None, _guard: Box::new(guard) }
    }

    /// `lose` makes the backend forget every row (a restart of an external one); adapters that cannot lose rows
    /// without losing the process skip the check that needs it.
    pub fn with_loss<F, Fut>(mut self, lose: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.lose = Some(Box::new(move || Box::pin(lose())));
        self
    }
}

/// Expands to one `#[tokio::test]` per check, each calling `$make().await` for a fresh [`Fresh`] store.
#[macro_export]
macro_rules! hot_conformance_suite {
    ($make:path) => {
        $crate::hot_conformance_suite!(@checks $make;
            upserts_replace_by_window_and_key,
            eviction_is_relative_to_the_newest_window_end,
            reads_return_intersecting_windows_in_order,
            long_windows_are_found_from_far_before,
            latest_is_the_newest_window_per_key,
            removes_drop_rows,
            the_cutoff_comes_with_the_rows,
            fill_keeps_present_rows,
            clear_starts_over,
            the_watermark_only_moves_forward,
            another_reader_finds_the_job,
            forget_deletes_the_job,
            large_batches_are_applied_whole,
            keys_of_any_text_round_trip,
            row_values_round_trip,
            lost_rows_are_reported,
            random_operations_follow_the_in_process_rules,
        );
    };
    (@checks $make:path; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check($make().await).await;
            }
        )*
    };
}

pub(crate) fn row(start: i64, end: i64, key: &str, v: i64) -> ResultRow {
    let mut map = Map::new();
    map.insert("key".into(), json!(key));
    map.insert("start".into(), json!(start));
    map.insert("v".into(), json!(v));
    ResultRow { window_start: start, window_end: end, key: key.into(), row: Arc::new(map) }
}

/// `(start, key, v)` of each row, for readable assertions.
pub(crate) fn ids(rows: &[Row]) -> Vec<(i64, String, i64)> {
    rows.iter()
        .map(|r| (r["start"].as_i64().unwrap(), r["key"].as_str().unwrap().into(), r["v"].as_i64().unwrap()))
        .collect()
}

pub(crate) fn id(start: i64, key: &str, v: i64) -> (i64, String, i64) {
    (start, key.into(), v)
}

async fn write(hot: &dyn HotResults, rows: Vec<ResultRow>) {
    hot.write(HotBatch::upserts(rows)).await;
    hot.flush().await;
}

async fn all(hot: &dyn HotReader, key: Option<&str>, from: Option<i64>, to: Option<i64>, limit: usize) -> Vec<Row> {
    hot.recent(key, from, to, limit).await.expect("read").rows
}

async fn latest(hot: &dyn HotReader, key: Option<&str>) -> Vec<(i64, String, i64)> {
    ids(&hot.latest(key).await.expect("latest").rows)
}

pub async fn upserts_replace_by_window_and_key(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    assert!(all(&*hot, None, None, None, 10).await.is_empty());
    write(&*hot, vec![row(0, 10, "a", 1), row(0, 10, "b", 1), row(0, 20, "a", 1)]).await;
    write(&*hot, vec![row(0, 10, "a", 2), row(0, 10, "a", 3)]).await;
    assert_eq!(hot.len(), 3);
    assert_eq!(ids(&all(&*hot, Some("a"), None, None, 10).await), vec![id(0, "a", 3), id(0, "a", 1)]);
    write(&*hot, Vec::new()).await;
    assert_eq!(all(&*hot, None, None, None, 10).await.len(), 3);
}

pub async fn eviction_is_relative_to_the_newest_window_end(f: Fresh) {
    let hot = f.store.open("job", 100);
    write(&*hot, vec![row(0, 100, "a", 1), row(50, 150, "a", 1), row(100, 200, "b", 1)]).await;
    // Newest end 200, cutoff 100: the window ending exactly at the cutoff goes.
    assert_eq!(ids(&all(&*hot, None, None, None, 10).await), vec![id(50, "a", 1), id(100, "b", 1)]);
    // A row already past retention is not kept, and an older batch does not move the cutoff back.
    write(&*hot, vec![row(-50, 90, "c", 1)]).await;
    assert_eq!(hot.len(), 2);
    write(&*hot, vec![row(1_000, 1_100, "a", 1)]).await;
    assert_eq!(latest(&*hot, None).await, vec![id(1_000, "a", 1)]);
    assert_eq!(hot.len(), 1);
}

pub async fn reads_return_intersecting_windows_in_order(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    let rows =
        vec![row(10, 20, "b", 1), row(0, 10, "a", 1), row(5, 15, "b", 1), row(5, 15, "a", 1), row(20, 30, "a", 1)];
    write(&*hot, rows).await;
    let range = |from, to| {
        let hot = hot.clone();
        async move { ids(&all(&*hot, None, from, to, usize::MAX).await) }
    };
    assert_eq!(range(Some(10), Some(15)).await, vec![id(5, "a", 1), id(5, "b", 1), id(10, "b", 1)]);
    assert_eq!(range(Some(9), Some(10)).await, vec![id(0, "a", 1), id(5, "a", 1), id(5, "b", 1)]);
    assert_eq!(range(Some(30), None).await, Vec::new());
    assert_eq!(range(None, Some(5)).await, vec![id(0, "a", 1)]);
    assert_eq!(range(Some(15), Some(15)).await, Vec::new());
    assert_eq!(range(None, None).await.len(), 5);
    assert_eq!(ids(&all(&*hot, None, None, None, 2).await), vec![id(0, "a", 1), id(5, "a", 1)]);
    assert_eq!(ids(&all(&*hot, Some("b"), Some(12), None, 10).await), vec![id(5, "b", 1), id(10, "b", 1)]);
    assert_eq!(ids(&all(&*hot, Some("a"), Some(12), None, 1).await), vec![id(5, "a", 1)]);
    assert!(all(&*hot, Some("c"), None, None, 10).await.is_empty());
    assert!(all(&*hot, Some(""), None, None, 10).await.is_empty());
    assert!(all(&*hot, None, None, None, 0).await.is_empty());
}

pub async fn long_windows_are_found_from_far_before(f: Fresh) {
    let hot = f.store.open("job", 1_000_000);
    write(&*hot, vec![row(0, 100_000, "long", 1), row(99_000, 99_500, "short", 1)]).await;
    assert_eq!(ids(&all(&*hot, None, Some(99_900), Some(99_901), 10).await), vec![id(0, "long", 1)]);
    hot.write(HotBatch { removes: vec![(0, 100_000, "long".into())], ..HotBatch::default() }).await;
    hot.flush().await;
    assert!(all(&*hot, None, Some(99_900), Some(99_901), 10).await.is_empty());
}

pub async fn latest_is_the_newest_window_per_key(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    let rows =
        vec![row(0, 10, "b", 1), row(10, 20, "b", 2), row(5, 15, "a", 3), row(0, 30, "a", 4), row(0, 10, "a,x", 5)];
    write(&*hot, rows).await;
    assert_eq!(latest(&*hot, None).await, vec![id(5, "a", 3), id(0, "a,x", 5), id(10, "b", 2)]);
    assert_eq!(latest(&*hot, Some("b")).await, vec![id(10, "b", 2)]);
    assert!(latest(&*hot, Some("nope")).await.is_empty());
}

pub async fn removes_drop_rows(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    write(&*hot, vec![row(0, 10, "a", 1), row(20, 30, "a", 2), row(0, 10, "b", 3)]).await;
    let removes = vec![(20, 30, "a".into()), (20, 30, "a".into()), (0, 11, "b".into()), (0, 10, "missing".into())];
    hot.write(HotBatch { removes, ..HotBatch::default() }).await;
    hot.flush().await;
    assert_eq!(hot.len(), 2);
    assert_eq!(latest(&*hot, Some("a")).await, vec![id(0, "a", 1)]);
    // Removals go before the upserts of the same batch.
    let batch = HotBatch { removes: vec![(0, 10, "a".into())], upserts: vec![row(0, 10, "a", 9)], watermark: None };
    hot.write(batch).await;
    hot.write(HotBatch { removes: vec![(0, 10, "b".into())], ..HotBatch::default() }).await;
    hot.flush().await;
    assert_eq!(latest(&*hot, None).await, vec![id(0, "a", 9)]);
}

pub async fn the_cutoff_comes_with_the_rows(f: Fresh) {
    let hot = f.store.open("job", 100);
    assert_eq!(hot.recent(None, None, None, 10).await.unwrap().cutoff, None);
    write(&*hot, vec![row(0, 100, "a", 1), row(100, 200, "a", 2), row(150, 250, "b", 3)]).await;
    let answer = hot.recent(None, Some(0), None, 10).await.unwrap();
    // Newest end 250: windows ending at or before 150 belong to the store.
    assert_eq!(answer.cutoff, Some(150));
    assert_eq!(ids(&answer.rows), vec![id(100, "a", 2), id(150, "b", 3)]);
    let later = hot.recent(Some("b"), Some(240), Some(260), 10).await.unwrap();
    assert_eq!((later.cutoff, ids(&later.rows)), (Some(150), vec![id(150, "b", 3)]));
    assert_eq!(hot.latest(None).await.unwrap().cutoff, Some(150));
}

pub async fn fill_keeps_present_rows(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    write(&*hot, vec![row(0, 10, "a", 5)]).await;
    hot.fill(vec![row(0, 10, "a", 1), row(10, 20, "a", 1), row(-5_000, -4_000, "old", 1)]).await;
    hot.flush().await;
    assert_eq!(ids(&all(&*hot, None, None, None, 10).await), vec![id(0, "a", 5), id(10, "a", 1)]);
    // A fill moves the newest end like a write.
    hot.fill(vec![row(2_000, 2_010, "b", 1)]).await;
    hot.flush().await;
    assert_eq!(ids(&all(&*hot, None, None, None, 10).await), vec![id(2_000, "b", 1)]);
}

pub async fn clear_starts_over(f: Fresh) {
    let hot = f.store.open("job", 100);
    write(&*hot, vec![row(1_000, 1_100, "a", 1), row(1_000, 1_100, "b", 1)]).await;
    hot.clear().await;
    assert!(all(&*hot, None, None, None, 10).await.is_empty());
    assert!(latest(&*hot, None).await.is_empty());
    assert_eq!(hot.len(), 0);
    // The cutoff starts over: an older window is kept again.
    write(&*hot, vec![row(0, 100, "a", 2)]).await;
    assert_eq!(ids(&all(&*hot, None, None, None, 10).await), vec![id(0, "a", 2)]);
}

pub async fn the_watermark_only_moves_forward(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    assert_eq!(hot.recent(None, None, None, 1).await.unwrap().watermark, None);
    for w in [50, 70, 60] {
        hot.write(HotBatch { watermark: Some(w), ..HotBatch::default() }).await;
    }
    hot.flush().await;
    assert_eq!(hot.recent(None, None, None, 1).await.unwrap().watermark, Some(70));
    assert_eq!(hot.latest(None).await.unwrap().watermark, Some(70));
}

pub async fn another_reader_finds_the_job(f: Fresh) {
    assert!(f.store.find("nobody").await.unwrap().is_none());
    let hot = f.store.open("job", 1_000);
    write(&*hot, vec![row(0, 10, "a", 1)]).await;
    hot.write(HotBatch { watermark: Some(7), ..HotBatch::default() }).await;
    hot.flush().await;
    let reader = f.store.find("job").await.unwrap().expect("the job is found");
    let answer = reader.recent(None, None, None, 10).await.unwrap();
    assert_eq!((ids(&answer.rows), answer.watermark), (vec![id(0, "a", 1)], Some(7)));
    assert_eq!(latest(&*reader, Some("a")).await, vec![id(0, "a", 1)]);
    // Jobs are apart.
    let other = f.store.open("other", 1_000);
    write(&*other, vec![row(0, 10, "a", 2)]).await;
    assert_eq!(ids(&all(&*reader, None, None, None, 10).await), vec![id(0, "a", 1)]);
}

pub async fn forget_deletes_the_job(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    write(&*hot, vec![row(0, 10, "a", 1)]).await;
    drop(hot);
    f.store.forget("job").await.unwrap();
    assert!(f.store.find("job").await.unwrap().is_none());
    f.store.forget("never-there").await.unwrap();
}

pub async fn large_batches_are_applied_whole(f: Fresh) {
    let hot = f.store.open("job", 10_000);
    write(&*hot, (0..3_000).map(|i| row(i * 10, i * 10 + 10, &format!("k{}", i % 7), i)).collect()).await;
    // Newest end 30,000, cutoff 20,000: windows 2,000.. stay.
    assert_eq!(hot.len(), 1_000);
    let rows = all(&*hot, None, None, None, usize::MAX).await;
    assert_eq!(rows.len(), 1_000);
    assert_eq!(ids(&rows[..1]), vec![id(20_000, "k5", 2_000)]);
    // A jump in time evicts everything before it.
    write(&*hot, vec![row(1_000_000, 1_000_010, "z", 0)]).await;
    assert_eq!(hot.len(), 1);
    assert_eq!(latest(&*hot, None).await, vec![id(1_000_000, "z", 0)]);
}

pub async fn keys_of_any_text_round_trip(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    let keys = ["", "a,b", "a\\,b", "é🙂", "nul\0inside", "\u{1}", "a", "a\0"];
    write(&*hot, keys.iter().enumerate().map(|(i, k)| row(0, 10, k, i as i64)).collect()).await;
    let mut sorted = keys.to_vec();
    sorted.sort();
    let got: Vec<String> = latest(&*hot, None).await.into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(got, sorted);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(latest(&*hot, Some(k)).await, vec![id(0, k, i as i64)], "key {k:?}");
        assert_eq!(ids(&all(&*hot, Some(k), None, None, 10).await), vec![id(0, k, i as i64)], "key {k:?}");
    }
}

pub async fn row_values_round_trip(f: Fresh) {
    let hot = f.store.open("job", 1_000);
    let value = json!({"n": null, "f": 1.5, "big": 9_007_199_254_740_993i64, "s": "x\"y", "list": [1, {"a": true}]});
    let Value::Object(map) = value.clone() else { unreachable!() };
    write(&*hot, vec![ResultRow { window_start: 0, window_end: 10, key: "k".into(), row: Arc::new(map) }]).await;
    let rows = all(&*hot, None, None, None, 10).await;
    assert_eq!(Value::Object((*rows[0]).clone()), value);
}

pub async fn lost_rows_are_reported(f: Fresh) {
    let Some(lose) = &f.lose else { return };
    let hot = f.store.open("job", 1_000);
    write(&*hot, vec![row(0, 10, "a", 1)]).await;
    lose().await;
    // The next write finds the rows gone.
    write(&*hot, vec![row(10, 20, "a", 2)]).await;
    tokio::time::timeout(Duration::from_secs(30), hot.lost()).await.expect("the loss is reported");
    // Refilled as a job does it, keeping what was written since.
    hot.fill(vec![row(0, 10, "a", 1), row(10, 20, "a", 0)]).await;
    hot.flush().await;
    assert_eq!(ids(&all(&*hot, None, None, None, 10).await), vec![id(0, "a", 1), id(10, "a", 2)]);
}

/// Seeded random writes, removals, fills and reads, each answer compared with the in-process adapter's (whose
/// own property test checks it against a naive model).
pub async fn random_operations_follow_the_in_process_rules(f: Fresh) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n) as i64
    };
    for round in 0..4 {
        let retention = 5 + next(60);
        let job = format!("random{round}");
        let hot = f.store.open(&job, retention);
        let model = MemoryHot::new(retention);
        let mut v = 0;
        for step in 0..150 {
            let key = format!("k{}", next(4));
            match next(10) {
                0..=3 => {
                    let rows: Vec<ResultRow> = (0..next(12))
                        .map(|_| {
                            v += 1;
                            let s = next(80);
                            row(s, s + 1 + next(15), &format!("k{}", next(4)), v)
                        })
                        .collect();
                    let removes: Vec<_> = (0..next(2))
                        .map(|_| {
                            let s = next(80);
                            (s, s + 1 + next(15), format!("k{}", next(4)))
                        })
                        .collect();
                    let batch = HotBatch { removes, upserts: rows, watermark: None };
                    model.write(batch.clone()).await;
                    hot.write(batch).await;
                }
                4 => {
                    let s = next(80);
                    let rows = vec![row(s, s + 1 + next(15), &key, -step)];
                    model.fill(rows.clone()).await;
                    hot.fill(rows).await;
                }
                5..=7 => {
                    hot.flush().await;
                    let (from, to) = ((next(3) > 0).then(|| next(100) - 10), (next(3) > 0).then(|| next(100) - 10));
                    let key = (next(2) == 0).then_some(key.as_str());
                    let limit = next(25) as usize;
                    let want = model.recent(key, from, to, limit).await.unwrap();
                    let got = hot.recent(key, from, to, limit).await.unwrap();
                    assert_eq!(
                        (got.cutoff, ids(&got.rows)),
                        (want.cutoff, ids(&want.rows)),
                        "round {round} step {step}: recent({key:?}, {from:?}, {to:?}, {limit})"
                    );
                }
                _ => {
                    hot.flush().await;
                    let key = (next(2) == 0).then_some(key.as_str());
                    let (want, got) = (model.latest(key), latest(&*hot, key).await);
                    assert_eq!(got, ids(&want), "round {round} step {step}: latest({key:?})");
                }
            }
        }
        hot.flush().await;
        assert_eq!(hot.len(), model.len(), "round {round}: rows held");
    }
}
