//! The index and its query language over real tantivy indexes in temporary directories.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_config::{FieldKind, FieldSpec, IndexDefinition};
use sluice_search::index::{IndexOptions, TopicIndex};
use sluice_search::query::run;
use sluice_sink::search::{SearchRequest, SortOrder};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-11-28T00:00:00Z
const T0: i64 = 1_795_824_000_000;

fn spec(kind: FieldKind, keyword: bool) -> FieldSpec {
    FieldSpec { kind, analyzer: None, keyword }
}

fn definition() -> IndexDefinition {
    let mut fields = BTreeMap::new();
    fields.insert("message".into(), spec(FieldKind::Text, false));
    fields.insert("service".into(), spec(FieldKind::Keyword, false));
    fields.insert("level".into(), spec(FieldKind::Keyword, false));
    fields.insert("latency_ms".into(), spec(FieldKind::Number, false));
    fields.insert("user.name".into(), spec(FieldKind::Text, true));
    fields.insert("at".into(), spec(FieldKind::Time, false));
    IndexDefinition { fields, ..Default::default() }
}

fn options() -> IndexOptions {
    IndexOptions {
        refresh_interval: Duration::from_millis(10),
        partition_ms: DAY,
        // Never sealed: these tests place documents in whole days.
        partition_docs: u64::MAX,
        retention_ms: None,
        writer_memory: 20_000_000,
        indexing_threads: 1,
        merge_threads: 1,
    }
}

/// Adds `events` as `(partition, offset, ts, json)` and notes `next` as applied.
fn add(index: &TopicIndex, events: &[(u32, u64, i64, Value)]) {
    let mut next = BTreeMap::new();
    let docs: Vec<_> = events
        .iter()
        .map(|(p, o, ts, v)| {
            let e = next.entry(*p).or_insert(0);
            *e = (*e).max(o + 1);
            let raw = serde_json::to_vec(v).unwrap();
            (*p, *o, *ts, index.schema.document(*ts, *p, *o, None, v, &raw))
        })
        .collect();
    index.add(docs, &next).unwrap();
}

fn req(q: &str) -> SearchRequest {
    SearchRequest {
        topic: "logs".into(),
        query: q.into(),
        from: None,
        to: None,
        limit: 100,
        cursor: None,
        sort: SortOrder::Time,
        facets: vec![],
        highlight: false,
    }
}

fn search(index: &TopicIndex, r: &SearchRequest) -> Value {
    run(index, r, Instant::now() + Duration::from_secs(10)).unwrap()
}

fn offsets(answer: &Value) -> Vec<u64> {
    answer["hits"].as_array().unwrap().iter().map(|h| h["offset"].as_u64().unwrap()).collect()
}

/// 40 events over two days: checkout/payments, errors every 4th, a timeout every 5th.
fn sample(index: &TopicIndex) {
    let mut events = Vec::new();
    for i in 0..40u64 {
        let service = if i % 2 == 0 { "checkout" } else { "payments" };
        let level = if i % 4 == 0 { "ERROR" } else { "INFO" };
        let message = if i % 5 == 0 {
            format!("request {i} failed: upstream timeout after retries")
        } else {
            format!("request {i} served in time")
        };
        let v = json!({
            "message": message, "service": service, "level": level, "latency_ms": i * 10,
            "user": {"name": format!("User Number{}", i % 3)},
            "at": T0 + i as i64 * HOUR,
        });
        events.push(((i % 2) as u32, i / 2, T0 + i as i64 * HOUR, v));
    }
    add(index, &events);
    index.commit().unwrap();
}

fn open() -> (tempfile::TempDir, TopicIndex) {
    let dir = tempfile::tempdir().unwrap();
    let index = TopicIndex::create(&dir.path().join("logs"), "logs", definition(), options()).unwrap();
    (dir, index)
}

#[test]
fn query_language_terms_phrases_fields_booleans_ranges_wildcards() {
    let (_d, index) = open();
    sample(&index);
    let count = |q: &str| search(&index, &req(q))["total"].as_u64().unwrap();
    assert_eq!(count("*"), 40);
    assert_eq!(count(""), 40);
    assert_eq!(count("timeout"), 8, "a term searches the text fields");
    assert_eq!(count("TIMEOUT"), 8, "the default analyzer lowercases");
    assert_eq!(count("\"upstream timeout\""), 8, "phrase");
    assert_eq!(count("\"timeout upstream\""), 0, "phrase order matters");
    assert_eq!(count("service:checkout"), 20);
    assert_eq!(count("service:Checkout"), 0, "keywords are exact");
    assert_eq!(count("service:checkout AND timeout"), 4);
    assert_eq!(count("service:checkout timeout"), 4, "terms combine with AND by default");
    assert_eq!(count("service:checkout OR level:ERROR"), 20, "every error is even");
    assert_eq!(count("level:ERROR AND NOT service:checkout"), 0);
    assert_eq!(count("timeout -service:payments"), 4);
    assert_eq!(count("latency_ms:[100 TO 190]"), 10, "number range, inclusive");
    assert_eq!(count("latency_ms:{100 TO 190}"), 8, "number range, exclusive");
    assert_eq!(count("latency_ms:>=300"), 10);
    assert_eq!(count("at:[2026-11-28T00:00:00Z TO 2026-11-28T10:00:00Z}"), 10, "time field range");
    assert_eq!(count("time*"), 40, "wildcard prefix (timeout and time)");
    assert_eq!(count("user.name:number1"), 13, "dotted paths reach into objects");
    assert_eq!(count("(service:checkout OR service:payments) AND latency_ms:<50"), 5);
}

#[test]
fn malformed_queries_name_the_position_and_unknown_fields() {
    let (_d, index) = open();
    sample(&index);
    let err = |q: &str| run(&index, &req(q), Instant::now() + Duration::from_secs(5)).unwrap_err().to_string();
    let e = err("service:checkout AND (timeout");
    assert!(e.contains("position"), "{e}");
    let e = err("latency_ms:[1 TO");
    assert!(e.contains("syntax error in query at position"), "{e}");
    let e = err("nosuch:thing");
    assert!(e.contains("unknown field `nosuch` at position 0"), "{e}");
    let e = err("latency_ms:abc");
    assert!(!e.is_empty());
}

#[test]
fn time_range_newest_first_and_cursor_pages_cover_everything_once() {
    let (_d, index) = open();
    sample(&index);
    // [T0 + 10h, T0 + 30h): events 10..=29, across both day partitions.
    let mut r = req("*");
    r.from = Some(T0 + 10 * HOUR);
    r.to = Some(T0 + 30 * HOUR);
    r.limit = 7;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let a = search(&index, &r);
        assert_eq!(a["total"], 20);
        let ts: Vec<i64> = a["hits"].as_array().unwrap().iter().map(|h| h["timestamp"].as_i64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] > w[1]), "newest first: {ts:?}");
        seen.extend(ts);
        pages += 1;
        match a["next_cursor"].as_str() {
            Some(c) => r.cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<i64> = (10..30).rev().map(|i| T0 + i * HOUR).collect();
    assert_eq!(seen, expected);
    // The bounds: from inclusive, to exclusive.
    r.cursor = None;
    r.limit = 100;
    r.from = Some(T0 + 10 * HOUR);
    r.to = Some(T0 + 10 * HOUR + 1);
    assert_eq!(search(&index, &r)["total"], 1);
}

#[test]
fn score_order_pages_by_relevance() {
    let (_d, index) = open();
    let events: Vec<_> = ["disk full", "disk disk disk full", "nothing here", "the disk"]
        .iter()
        .enumerate()
        .map(|(i, m)| (0u32, i as u64, T0 + i as i64, json!({"message": m})))
        .collect();
    add(&index, &events);
    index.commit().unwrap();
    let mut r = req("disk");
    r.sort = SortOrder::Score;
    r.limit = 2;
    let a = search(&index, &r);
    assert_eq!(offsets(&a)[0], 1, "most occurrences first: {a}");
    assert!(a["hits"][0]["score"].as_f64().unwrap() >= a["hits"][1]["score"].as_f64().unwrap());
    r.cursor = a["next_cursor"].as_str().map(str::to_string);
    let b = search(&index, &r);
    assert_eq!(b["hits"].as_array().unwrap().len(), 1);
    assert!(b["next_cursor"].is_null());
    let mut all: Vec<u64> = offsets(&a).into_iter().chain(offsets(&b)).collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 3]);
}

#[test]
fn facets_count_every_match_not_just_the_page() {
    let (_d, index) = open();
    sample(&index);
    let mut r = req("timeout");
    r.limit = 1;
    r.facets = vec!["service".into(), "level".into(), "user.name".into()];
    let a = search(&index, &r);
    assert_eq!(a["facets"]["service"], json!([{"value": "checkout", "count": 4}, {"value": "payments", "count": 4}]));
    // timeout on i % 5 == 0: i = 0,5,...,35; errors where i % 4 == 0 too: 0, 20.
    assert_eq!(a["facets"]["level"], json!([{"value": "INFO", "count": 6}, {"value": "ERROR", "count": 2}]));
    let users: u64 = a["facets"]["user.name"].as_array().unwrap().iter().map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(users, 8, "a text field with keyword: true counts exact values");
    assert_eq!(a["facets"]["user.name"][0]["value"].as_str().unwrap().split(' ').count(), 2, "not tokens");
    r.facets = vec!["message".into()];
    assert!(
        run(&index, &r, Instant::now() + Duration::from_secs(5))
            .unwrap_err()
            .to_string()
            .contains("keeps no exact values")
    );
}

#[test]
fn highlights_mark_matched_terms_and_hits_carry_the_event() {
    let (_d, index) = open();
    sample(&index);
    let mut r = req("upstream AND service:checkout");
    r.highlight = true;
    r.limit = 1;
    let a = search(&index, &r);
    let hit = &a["hits"][0];
    assert_eq!(hit["event"]["service"], "checkout");
    assert_eq!(hit["id"], format!("logs/{}/{}", hit["partition"], hit["offset"]));
    let frag = hit["highlights"]["message"][0].as_str().unwrap();
    assert!(frag.contains("<em>upstream</em>"), "{frag}");
    assert!(!frag.contains("<em>checkout</em>"), "keyword matches are not text highlights: {frag}");
}

#[test]
fn reopen_keeps_committed_documents_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs");
    {
        let index = TopicIndex::create(&path, "logs", definition(), options()).unwrap();
        add(&index, &[(0, 0, T0, json!({"message": "one"})), (0, 1, T0 + DAY, json!({"message": "two"}))]);
        index.commit().unwrap();
        add(&index, &[(0, 2, T0, json!({"message": "three"}))]);
        // Dropped without a commit: as after a crash.
    }
    let index = TopicIndex::open(&path, options()).unwrap();
    assert_eq!(index.committed_offsets(), BTreeMap::from([(0, 2)]));
    assert_eq!(search(&index, &req("*"))["total"], 2);
    // Replaying from the committed offsets adds the lost one exactly once, and a replay of older ones is skipped.
    add(&index, &[(0, 1, T0 + DAY, json!({"message": "two"})), (0, 2, T0, json!({"message": "three"}))]);
    index.commit().unwrap();
    assert_eq!(search(&index, &req("*"))["total"], 3);
}

#[test]
fn a_round_cut_between_partition_commits_never_duplicates() {
    // Partition A commits offsets up to 4, then the process dies before the manifest is written: the manifest
    // still says 2. The replay from 2 must skip what A has and add what B lost.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs");
    {
        let index = TopicIndex::create(&path, "logs", definition(), options()).unwrap();
        add(&index, &[(0, 0, T0, json!({"message": "a0"})), (0, 1, T0 + DAY, json!({"message": "b1"}))]);
        index.commit().unwrap();
    }
    // Simulate: A (day 0) got offsets 2 and 3 and committed its own payload {0: 4}; B's offsets were lost.
    {
        let index = TopicIndex::open(&path, options()).unwrap();
        let p = index.partitions(Some(T0), Some(T0 + 1))[0].clone();
        let sch = index.schema.clone();
        let mut w: tantivy::IndexWriter = p.index.writer(20_000_000).unwrap();
        let v = json!({"message": "a2"});
        w.add_document(sch.document(T0, 0, 2, None, &v, &serde_json::to_vec(&v).unwrap())).unwrap();
        let mut c = w.prepare_commit().unwrap();
        c.set_payload(r#"{"0":4}"#);
        c.commit().unwrap();
    }
    let index = TopicIndex::open(&path, options()).unwrap();
    assert_eq!(index.committed_offsets(), BTreeMap::from([(0, 2)]));
    add(
        &index,
        &[
            (0, 2, T0, json!({"message": "a2"})),
            (0, 3, T0 + DAY, json!({"message": "b3"})),
            (0, 4, T0, json!({"message": "a4"})),
        ],
    );
    index.commit().unwrap();
    let a = search(&index, &req("*"));
    let mut got = offsets(&a);
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3, 4], "{a}");
}

#[test]
fn retention_drops_whole_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.retention_ms = Some(DAY);
    let index = TopicIndex::create(&dir.path().join("logs"), "logs", definition(), o).unwrap();
    let now = sluice_log::now_ms();
    add(
        &index,
        &[
            (0, 0, now - 3 * DAY, json!({"message": "old"})),
            (0, 1, now, json!({"message": "new"})),
            (0, 2, now - 2 * DAY - 1, json!({"message": "older"})),
        ],
    );
    index.commit().unwrap();
    // Events already past retention are not indexed at all; the rest stay until their partition ends.
    assert_eq!(search(&index, &req("*"))["total"], 1);
    assert_eq!(index.apply_retention(now + 3 * DAY).unwrap(), 1);
    assert_eq!(search(&index, &req("*"))["total"], 0);
    assert!(index.partition_info().is_empty());
}

#[test]
fn a_search_past_its_deadline_times_out() {
    let (_d, index) = open();
    sample(&index);
    let e = run(&index, &req("*"), Instant::now() - Duration::from_millis(1)).unwrap_err();
    assert_eq!(e.code(), "search_timeout");
}

#[test]
fn reset_drops_uncommitted_documents() {
    let (_d, index) = open();
    add(&index, &[(0, 0, T0, json!({"message": "kept"}))]);
    index.commit().unwrap();
    add(&index, &[(0, 1, T0, json!({"message": "dropped"}))]);
    index.reset().unwrap();
    index.commit().unwrap();
    assert_eq!(search(&index, &req("*"))["total"], 1);
    assert_eq!(index.committed_offsets(), BTreeMap::from([(0, 1)]));
}

mod model {
    //! Random adds, commits, crashes (including mid-commit, between partitions) and replays from the committed
    //! offsets, against a model: afterwards every record of the "log" is in the index exactly once.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Read the next n records of every log partition from where the sink is, and add them.
        Add(usize),
        Commit,
        /// Drop the index without committing (a crash), reopen, resume from the manifest.
        Crash,
        /// Commit only the first k partitions written, then crash.
        CrashMidCommit(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..40).prop_map(Op::Add),
            2 => Just(Op::Commit),
            1 => Just(Op::Crash),
            1 => (0usize..3).prop_map(Op::CrashMidCommit),
        ]
    }

    /// The log: two partitions of 120 records each, times spread over five days (out of order within a day), so
    /// batches touch more partitions than writers may be open.
    fn log() -> Vec<Vec<i64>> {
        (0..2u64)
            .map(|p| (0..120u64).map(|o| T0 + ((o * 7 + p * 13) % 5) as i64 * DAY + (o as i64 % 11) * 1000).collect())
            .collect()
    }

    /// Day partitions sealed after 20 documents: seals, gaps and evicted writers all happen.
    fn options() -> IndexOptions {
        IndexOptions { partition_docs: 20, ..super::options() }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn every_record_is_indexed_exactly_once(ops in proptest::collection::vec(op(), 1..25)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("logs");
            let log = log();
            let mut index = TopicIndex::create(&path, "logs", definition(), options()).unwrap();
            let mut read: Vec<u64> = vec![0, 0];
            let reopen = |index: TopicIndex| {
                drop(index);
                let i = TopicIndex::open(&path, options()).unwrap();
                let c = i.committed_offsets();
                (i, vec![c.get(&0).copied().unwrap_or(0), c.get(&1).copied().unwrap_or(0)])
            };
            for op in ops.into_iter().chain([Op::Add(200), Op::Commit]) {
                match op {
                    Op::Add(n) => {
                        let mut events = Vec::new();
                        for p in 0..2usize {
                            let from = read[p] as usize;
                            for (o, ts) in log[p].iter().enumerate().skip(from).take(n) {
                                events.push((p as u32, o as u64, *ts, json!({"message": format!("p{p} o{o}")})));
                            }
                            read[p] = (from + n).min(log[p].len()) as u64;
                        }
                        if !events.is_empty() {
                            add(&index, &events);
                        }
                    }
                    Op::Commit => index.commit().unwrap(),
                    Op::Crash => (index, read) = reopen(index),
                    Op::CrashMidCommit(k) => {
                        index.crash_mid_commit(k).unwrap();
                        (index, read) = reopen(index);
                    }
                }
            }
            let mut r = req("*");
            r.limit = 1000;
            let a = search(&index, &r);
            prop_assert_eq!(a["total"].as_u64(), Some(240));
            let mut ids: Vec<(u64, u64)> = a["hits"].as_array().unwrap().iter()
                .map(|h| (h["partition"].as_u64().unwrap(), h["offset"].as_u64().unwrap())).collect();
            ids.sort();
            let expected: Vec<(u64, u64)> = (0..2).flat_map(|p| (0..120).map(move |o| (p, o))).collect();
            prop_assert_eq!(ids, expected);
        }
    }
}

#[test]
fn a_batch_over_more_partitions_than_open_writers_is_indexed_once_across_a_crash() {
    // Late events spread one batch over five day partitions (more than the writers kept open), so writers are
    // committed and closed mid-batch with offsets exact to the record being added. A crash before the next refresh
    // keeps those commits; the replay must skip what they hold and add the rest: everything once.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs");
    let batch = |from: u64| -> Vec<(u32, u64, i64, Value)> {
        (0..5u64).map(|d| (0, from + d, T0 + d as i64 * DAY, json!({"message": format!("o{}", from + d)}))).collect()
    };
    {
        let index = TopicIndex::create(&path, "logs", definition(), options()).unwrap();
        add(&index, &batch(0));
        index.commit().unwrap();
        add(&index, &batch(5));
        // Crash: dropped without a commit.
    }
    let index = TopicIndex::open(&path, options()).unwrap();
    assert_eq!(index.committed_offsets(), BTreeMap::from([(0, 5)]));
    add(&index, &batch(5));
    index.commit().unwrap();
    let mut r = req("*");
    r.limit = 100;
    let mut got = offsets(&search(&index, &r));
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<u64>>());
}

#[test]
fn partitions_follow_the_data_sparse_history_wide_dense_data_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs");
    let opts = IndexOptions { partition_ms: 28 * DAY, partition_docs: 50, ..options() };
    let check = |index: &TopicIndex, total: u64| {
        let parts = index.partition_info();
        assert!(parts.windows(2).all(|w| w[0].end_ms <= w[1].start_ms), "overlap: {parts:?}");
        assert_eq!(parts.iter().map(|p| p.documents).sum::<u64>(), total);
        parts
    };
    let index = TopicIndex::create(&path, "logs", definition(), opts.clone()).unwrap();
    // A year of sparse history (one event every 3.65 days), in order: four-week partitions.
    let year: Vec<(u32, u64, i64, Value)> =
        (0..100u64).map(|o| (0, o, T0 + o as i64 * 365 * DAY / 100, json!({"message": format!("old {o}")}))).collect();
    for b in year.chunks(10) {
        add(&index, b);
        index.commit().unwrap();
    }
    let sparse = check(&index, 100).len();
    assert!((13..=15).contains(&sparse), "{sparse} partitions for a sparse year");
    // Then dense traffic: one event a minute for 8 hours, well past the year. Sealed after 50 documents, but
    // never narrower than an hour: hourly partitions of ~60.
    let live0 = T0 + 400 * DAY;
    let live: Vec<(u32, u64, i64, Value)> =
        (0..480u64).map(|i| (0, 100 + i, live0 + i as i64 * 60_000, json!({"message": format!("live {i}")}))).collect();
    for b in live.chunks(20) {
        add(&index, b);
        index.commit().unwrap();
    }
    let parts = check(&index, 580);
    let dense: Vec<_> = parts.iter().filter(|p| p.end_ms > live0).collect();
    assert!((8..=9).contains(&dense.len()), "{} partitions for 8 dense hours: {dense:?}", dense.len());
    assert!(dense.iter().all(|p| p.documents <= 80), "{dense:?}");
    // Late events land in the partition that already covers them.
    add(&index, &[(0, 580, live0 + 30_000, json!({"message": "late"}))]);
    index.commit().unwrap();
    assert_eq!(check(&index, 581).len(), parts.len());
    // The sealed ends are durable.
    drop(index);
    let index = TopicIndex::open(&path, opts).unwrap();
    let reopened = check(&index, 581);
    assert_eq!(
        reopened.iter().map(|p| (p.start_ms, p.end_ms)).collect::<Vec<_>>(),
        parts.iter().map(|p| (p.start_ms, p.end_ms)).collect::<Vec<_>>()
    );
    let mut r = req("*");
    r.limit = 1000;
    let mut got = offsets(&search(&index, &r));
    got.sort();
    assert_eq!(got, (0..581).collect::<Vec<u64>>());
}
