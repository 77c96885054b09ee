//! Process-level crash test of the schema registry: schemas registered while the server is SIGKILLed at random
//! moments keep their ids, versions and subjects after every restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, kill_rounds, spawn_server, wait_ready};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Version `n` of a subject's schema: fields f0..=fn, each new one with a default (backward compatible).
fn schema(subject: &str, n: usize) -> String {
    let fields: Vec<Value> = (0..=n)
        .map(|i| {
            if i == 0 {
                json!({"name": "f0", "type": "string"})
            } else {
                json!({"name": format!("f{i}"), "type": "long", "default": i})
            }
        })
        .collect();
    json!({"type": "record", "name": subject.replace('-', "_"), "fields": fields}).to_string()
}

/// (subject, schema, id) of every acknowledged registration.
type Acked = Arc<Mutex<Vec<(String, String, u64)>>>;

async fn registrar(http: reqwest::Client, base: String, round: usize, acked: Acked) {
    let ct = "application/vnd.schemaregistry.v1+json";
    for k in 0.. {
        let subject = format!("sub-{}-{}", round % 4, k % 3);
        let version = round * 100 + k;
        let s = schema(&subject, version);
        let r = http
            .post(format!("{base}/subjects/{subject}/versions"))
            .header("content-type", ct)
            .body(json!({"schema": s}).to_string())
            .send()
            .await;
        let Ok(r) = r else { return };
        if !r.status().is_success() {
            return;
        }
        let Ok(body) = r.json::<Value>().await else { return };
        acked.lock().unwrap().push((subject, s, body["id"].as_u64().expect("registration returns an id")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_ids_survive_sigkill() {
    let rounds = kill_rounds();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut server = spawn_server(dir.path(), port);
    wait_ready(&http, &base).await;
    for round in 0..rounds {
        let task = tokio::spawn(registrar(http.clone(), base.clone(), round, acked.clone()));
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..300))).await;
        server.kill().expect("SIGKILL the server");
        server.wait().unwrap();
        task.await.unwrap();
        server = spawn_server(dir.path(), port);
        wait_ready(&http, &base).await;
        let acked = acked.lock().unwrap().clone();
        let mut ids = std::collections::HashMap::new();
        for (subject, s, id) in &acked {
            // The same schema text under the same subject always answers with its acknowledged id.
            let r: Value = http
                .post(format!("{base}/subjects/{subject}"))
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(json!({"schema": s}).to_string())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["id"].as_u64(), Some(*id), "{subject}: {r}");
            let by_id: Value = http.get(format!("{base}/schemas/ids/{id}")).send().await.unwrap().json().await.unwrap();
            let stored: Value = serde_json::from_str(by_id["schema"].as_str().unwrap()).unwrap();
            assert_eq!(stored, serde_json::from_str::<Value>(s).unwrap(), "schema of id {id}");
            if let Some(other) = ids.insert(*id, s.clone()) {
                assert_eq!(&other, s, "id {id} names two different schemas");
            }
        }
        // Versions are dense and ordered per subject.
        for k in 0..3 {
            let subject = format!("sub-{}-{k}", round % 4);
            let r = http.get(format!("{base}/subjects/{subject}/versions")).send().await.unwrap();
            if r.status().is_success() {
                let versions: Vec<u64> = r.json().await.unwrap();
                assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>(), "{subject}");
            }
        }
        eprintln!("round {round}: {} registrations acknowledged and intact", acked.len());
    }
    assert!(acked.lock().unwrap().len() > 20, "too few registrations to mean anything");
    server.kill().unwrap();
    server.wait().unwrap();
}
