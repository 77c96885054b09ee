//! Process-level crash test: the real binary, several concurrent producers, SIGKILL at random moments, restart,
//! and every acknowledged event must be readable exactly once at its acknowledged partition and offset.
//!
//! `SLUICE_TEST_KILL_ROUNDS` sets the number of kills (default 12).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, kill_rounds, spawn_server, wait_ready};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const PARTITIONS: u32 = 3;
const TOPIC: &str = "crash";

/// Every event of the topic, as partition -> offset -> id.
async fn read_all(http: &reqwest::Client, base: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let mut ids = Vec::new();
        let mut next = 0u64;
        loop {
            let url = format!("{base}/v1/topics/{TOPIC}/events?partition={p}&offset={next}&limit=10000");
            let r: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let events = r["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            for e in events {
                assert_eq!(e["offset"].as_u64().unwrap(), ids.len() as u64, "offsets are dense");
                ids.push(e["value"]["id"].as_str().unwrap().to_string());
            }
            next = r["next_offset"].as_u64().unwrap();
            assert_eq!(next, ids.len() as u64);
        }
        out.push(ids);
    }
    out
}

type Acked = Arc<Mutex<Vec<(String, u32, u64)>>>;

async fn producer(http: reqwest::Client, base: String, client: usize, acked: Acked, seq_start: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seq = seq_start;
    loop {
        let n = rng.random_range(1..20);
        let mut lines = String::new();
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = format!("c{client}-{seq}");
            seq += 1;
            let ev = if rng.random_bool(0.5) {
                json!({"key": format!("k{}", rng.random_range(0..50)), "value": {"id": id}})
            } else {
                json!({"value": {"id": id}})
            };
            lines.push_str(&ev.to_string());
            lines.push('\n');
            ids.push(id);
        }
        let resp = http.post(format!("{base}/v1/topics/{TOPIC}/events")).body(lines).send().await;
        let Ok(resp) = resp else { return };
        if !resp.status().is_success() {
            return;
        }
        let Ok(body) = resp.json::<Value>().await else { return };
        let results = body["results"].as_array().expect("results");
        let mut a = acked.lock().unwrap();
        for (id, r) in ids.into_iter().zip(results) {
            let p = r["partition"].as_u64().expect("acked event has a partition") as u32;
            let o = r["offset"].as_u64().expect("acked event has an offset");
            a.push((id, p, o));
        }
    }
}

fn check(log: &[Vec<String>], acked: &[(String, u32, u64)]) {
    let mut seen = HashSet::new();
    for ids in log {
        for id in ids {
            assert!(seen.insert(id.clone()), "event {id} is stored twice");
        }
    }
    for (id, p, o) in acked {
        let stored = log[*p as usize].get(*o as usize);
        assert_eq!(stored, Some(id), "acknowledged event {id} is not at {p}/{o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event() {
    let rounds = kill_rounds();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let mut server = spawn_server(dir.path(), port);
    wait_ready(&http, &base).await;
    let r = http.post(format!("{base}/v1/topics")).json(&json!({"name": TOPIC, "partitions": PARTITIONS})).send();
    assert!(r.await.unwrap().status().is_success());

    for round in 0..rounds {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let seq_start = (round as u64) * 1_000_000;
                tokio::spawn(producer(http.clone(), base.clone(), c, acked.clone(), seq_start, rng.random()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.kill().expect("SIGKILL the server");
        server.wait().unwrap();
        for c in clients {
            c.await.unwrap();
        }
        server = spawn_server(dir.path(), port);
        wait_ready(&http, &base).await;
        let log = read_all(&http, &base).await;
        let acked = acked.lock().unwrap().clone();
        check(&log, &acked);
        eprintln!("round {round}: {} acknowledged, {} stored", acked.len(), log.iter().map(Vec::len).sum::<usize>());
    }
    let total = acked.lock().unwrap().len();
    assert!(total > 100, "the test produced too little to mean anything ({total} events)");
    let by_partition: HashMap<u32, usize> = acked.lock().unwrap().iter().fold(HashMap::new(), |mut m, (_, p, _)| {
        *m.entry(*p).or_default() += 1;
        m
    });
    assert_eq!(by_partition.len(), PARTITIONS as usize, "events reached every partition");
    server.kill().unwrap();
    server.wait().unwrap();
}
