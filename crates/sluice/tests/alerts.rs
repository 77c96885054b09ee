//! Observability through the real binary: `/metrics` passes `promtool check metrics` (with
//! `SLUICE_TEST_PROMTOOL=1`), and each of the four in-process alerts is driven into firing by creating its
//! condition — a stalled job, a slowed sink, poisoned events, a filling disk — and back to ok, as seen by
//! `GET /v1/alerts` and `sluice status`. Alerts are evaluated every 200 ms over a 3 s window with `for = 600ms`.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

async fn start(env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![
        ("SLUICE__ALERTS__EVAL_INTERVAL", "200ms"),
        ("SLUICE__ALERTS__WINDOW", "3s"),
        ("SLUICE__ALERTS__FOR", "600ms"),
        ("SLUICE__ALERTS__DISK_SCAN_INTERVAL", "1s"),
        ("SLUICE__STORE__FLUSH_INTERVAL", "200ms"),
        ("SLUICE__STREAM__CHECKPOINT_INTERVAL", "200ms"),
    ];
    all.extend_from_slice(env);
    TestServer::start(&all).await
}

impl TestServer {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!(status < 300, "POST {path}: {status} {v}");
        v
    }

    async fn alert(&self, name: &str) -> Value {
        let (status, v) = self.call(reqwest::Method::GET, "/v1/alerts", None).await;
        assert_eq!(status, 200, "{v}");
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 4, "exactly four alerts: {v}");
        alerts.iter().find(|a| a["name"] == name).cloned().unwrap_or_else(|| panic!("no alert {name}: {v}"))
    }

    /// Polls `GET /v1/alerts` until `name` is in `state` (while `nudge` keeps the condition going).
    async fn wait_alert(&self, name: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.alert(name).await;
            if a["state"] == state {
                return a;
            }
            assert!(Instant::now() < deadline, "alert {name} did not become {state}: {a}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `sluice status` run against this server.
    fn status_screen(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["status", "--server", &self.base])
            .output()
            .expect("run sluice status");
        assert!(out.status.success(), "sluice status failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

fn events(n: usize, from: usize) -> Vec<Value> {
    (from..from + n).map(|i| json!({"value": {"service": "api", "status": 500 + (i % 3), "n": i}})).collect()
}

/// The alert's screen line: `  NAME   STATE ...`.
fn alert_line<'a>(screen: &'a str, name: &str) -> &'a str {
    screen.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{screen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_every_stage_and_pass_promtool() {
    let s = start(&[]).await;
    s.post_ok("/v1/topics", json!({"name": "http_requests", "partitions": 1})).await;
    s.post_ok(
        "/v1/jobs",
        json!({"sql": "CREATE JOB epm AS SELECT window_start, service, count(*) AS n FROM http_requests \
                       GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service"}),
    )
    .await;
    s.produce("http_requests", events(100, 0)).await;
    // The hot path answers (a hit) and a range before its cutoff goes to the store (a miss).
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, r) = s.call(reqwest::Method::GET, "/v1/jobs/epm/results/latest", None).await;
        let _ = s.call(reqwest::Method::GET, "/v1/jobs/epm/results?from=2020-01-01T00:00:00Z", None).await;
        let text = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        let have = |m: &str| text.lines().any(|l| l.starts_with(m));
        let all = [
            "sluice_ingest_events_total{",
            "sluice_log_fsync_duration_seconds_bucket",
            "sluice_job_records_in_total{",
            "sluice_job_operator_seconds_bucket{job=\"epm\",operator=\"read\"",
            "sluice_job_operator_seconds_bucket{job=\"epm\",operator=\"process\"",
            "sluice_job_operator_seconds_bucket{job=\"epm\",operator=\"merge\"",
            "sluice_job_operator_seconds_bucket{job=\"epm\",operator=\"emit\"",
            "sluice_job_watermark_delay_seconds{job=\"epm\"}",
            "sluice_job_checkpoint_age_seconds{job=\"epm\"}",
            "sluice_sink_end_to_end_seconds_bucket",
            "sluice_cache_requests_total{cache=\"job_results\",result=\"hit\"}",
            "sluice_cache_requests_total{cache=\"job_results\",result=\"miss\"}",
            "sluice_data_dir_filesystem_size_bytes",
            "sluice_data_dir_filesystem_free_bytes",
            "sluice_data_dir_filesystem_used_bytes",
            "sluice_data_dir_bytes{area=\"log\"}",
            "sluice_alert_state{alert=\"disk_usage\"}",
            "sluice_schema_live",
            "process_resident_memory_bytes",
        ];
        let missing: Vec<_> = all.iter().filter(|m| !have(m)).collect();
        if missing.is_empty() && r["rows"].as_array().is_some_and(|a| !a.is_empty()) {
            break text;
        }
        assert!(Instant::now() < deadline, "missing metrics {missing:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Bounded labels: no event value or key ever becomes a label.
    assert!(!text.contains("\"api\""), "an event value leaked into a label");

    if std::env::var("SLUICE_TEST_PROMTOOL").as_deref() != Ok("1") {
        eprintln!("skipping promtool check metrics: set SLUICE_TEST_PROMTOOL=1 (needs promtool, Debian `prometheus`)");
        return;
    }
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (install the Debian package `prometheus`)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_alert_fires_for_a_stalled_job_and_clears_when_it_resumes() {
    let s = start(&[("SLUICE__ALERTS__LAG_RECORDS", "50")]).await;
    s.post_ok("/v1/topics", json!({"name": "requests", "partitions": 1})).await;
    s.post_ok("/v1/jobs", json!({"sql": "CREATE JOB copy AS INSERT INTO copied SELECT service, n FROM requests"}))
        .await;
    s.produce("requests", events(10, 0)).await;
    assert_eq!(s.wait_alert("consumer_lag", "ok", Duration::from_secs(10)).await["threshold"], 50.0);
    s.post_ok("/v1/jobs/copy/pause", json!({})).await;
    s.produce("requests", events(200, 10)).await;
    let a = s.wait_alert("consumer_lag", "pending", Duration::from_secs(10)).await;
    assert_eq!(a["source"], "job/copy", "{a}");
    let a = s.wait_alert("consumer_lag", "firing", Duration::from_secs(10)).await;
    assert!(a["value"].as_f64().unwrap() >= 200.0, "{a}");
    let screen = s.status_screen();
    assert!(alert_line(&screen, "consumer_lag").contains("FIRING"), "{screen}");
    assert!(screen.contains("(job/copy)") && screen.contains("stopped"), "{screen}");
    s.post_ok("/v1/jobs/copy/resume", json!({})).await;
    let a = s.wait_alert("consumer_lag", "ok", Duration::from_secs(20)).await;
    assert!(a["value"].as_f64().unwrap() < 50.0, "{a}");
    assert!(alert_line(&s.status_screen(), "consumer_lag").contains(" ok "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_alert_fires_for_a_slowed_sink_and_clears_when_it_is_idle() {
    // Every sink sleeps 700 ms before each write: end-to-end is at least that, over the 500 ms threshold.
    let s = start(&[("SLUICE_TEST_SINK_DELAY_MS", "700")]).await;
    s.post_ok("/v1/topics", json!({"name": "requests", "partitions": 1})).await;
    let started = Instant::now();
    let mut i = 0;
    let a = loop {
        s.produce("requests", events(5, i)).await;
        i += 5;
        let a = s.alert("e2e_p99").await;
        if a["state"] == "firing" {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "e2e_p99 never fired: {a}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(a["value"].as_f64().unwrap() > 0.5, "{a}");
    assert_eq!(a["source"], "store", "{a}");
    assert!(alert_line(&s.status_screen(), "e2e_p99").contains("FIRING"));
    // No more slow events: once the window has moved past them, nothing slow is left and the alert clears.
    let a = s.wait_alert("e2e_p99", "ok", Duration::from_secs(15)).await;
    assert!(a["value"].is_null() || a["value"].as_f64().unwrap() <= 0.5, "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_alert_fires_for_poisoned_events_and_clears() {
    let s = start(&[]).await;
    s.post_ok("/v1/topics", json!({"name": "orders", "partitions": 1})).await;
    let sr = |schema: Value| json!({"schema": schema.to_string()});
    let v1 = json!({"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]});
    s.post_ok("/subjects/orders-value/versions", sr(v1)).await;
    let good = |from: i64, n: i64| (from..from + n).map(|i| json!({"value": {"id": i, "region": "eu"}})).collect();
    // Poisoned: written with version 1, which the next version cannot read.
    s.produce("orders", (100..110).map(|i| json!({"value": {"id": i}})).collect()).await;
    // v2 adds a field without a default (compatibility off): v1 events cannot be read as v2 any more.
    let (st, v) = s.call(reqwest::Method::PUT, "/config/orders-value", Some(json!({"compatibility": "NONE"}))).await;
    assert_eq!(st, 200, "{v}");
    let v2 = json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "region", "type": "string"}]});
    s.post_ok("/subjects/orders-value/versions", sr(v2)).await;
    s.produce("orders", good(0, 20)).await;
    s.wait_alert("error_rate", "ok", Duration::from_secs(10)).await;
    // A job reading the topic from the start decodes into the latest version: the v1 events fail.
    s.post_ok("/v1/jobs", json!({"sql": "CREATE JOB ids AS INSERT INTO order_ids SELECT id FROM orders"})).await;
    let a = s.wait_alert("error_rate", "firing", Duration::from_secs(10)).await;
    assert!(a["value"].as_f64().unwrap() > 0.001, "{a}");
    let screen = s.status_screen();
    assert!(alert_line(&screen, "error_rate").contains("FIRING"), "{screen}");
    assert!(screen.contains("job/decode x") && screen.contains(" ids: "), "the last errors name the job: {screen}");
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sluice_errors_total{kind=\"decode\",stage=\"job\"} 10"), "{metrics}");
    // Good events only from now on: the window moves past the errors.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 1000;
    loop {
        s.produce("orders", good(i, 20)).await;
        i += 20;
        let a = s.alert("error_rate").await;
        if a["state"] == "ok" {
            assert_eq!(a["value"], 0.0, "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "error_rate did not clear: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(used, available)` bytes of the filesystem holding `path`, as `df` counts them.
// The statvfs field types differ between platforms (u32 on some 32-bit targets).
#[allow(clippy::unnecessary_cast)]
fn df(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid path and room for one statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) }, 0);
    // SAFETY: statvfs succeeded.
    let st = unsafe { st.assume_init() };
    let f = st.f_frsize as u64;
    ((st.f_blocks as u64 - st.f_bfree as u64) * f, st.f_bavail as u64 * f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_alert_fires_when_the_filesystem_fills_past_the_threshold_and_clears() {
    const FILE: u64 = 1 << 30;
    let probe = tempfile::tempdir().unwrap();
    let (used, avail) = df(probe.path());
    if avail < 4 * FILE {
        eprintln!("skipping: the filesystem of {} has less than 4GiB free", probe.path().display());
        return;
    }
    // The threshold sits half the file above today's usage: writing the file crosses it, deleting it comes back
    // under it, with 512MiB of slack for whatever else writes to this filesystem meanwhile.
    let ratio = (used + FILE / 2) as f64 / (used + avail) as f64;
    let s = start(&[("SLUICE__ALERTS__DISK_USED_RATIO", &format!("{ratio:.9}"))]).await;
    s.post_ok("/v1/topics", json!({"name": "requests", "partitions": 1})).await;
    s.produce("requests", events(10, 0)).await;
    s.wait_alert("disk_usage", "ok", Duration::from_secs(10)).await;
    let path = s.data().join("ballast");
    let file = std::fs::File::create(&path).unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, FILE as libc::off_t) };
        if rc != 0 {
            // No fallocate here: write the bytes.
            use std::io::Write;
            let chunk = vec![1u8; 1 << 20];
            let mut w = std::io::BufWriter::new(&file);
            for _ in 0..(FILE >> 20) {
                w.write_all(&chunk).unwrap();
            }
        }
    }
    file.sync_all().unwrap();
    let a = s.wait_alert("disk_usage", "firing", Duration::from_secs(10)).await;
    assert!(a["value"].as_f64().unwrap() > ratio, "{a}");
    let screen = s.status_screen();
    assert!(alert_line(&screen, "disk_usage").contains("FIRING"), "{screen}");
    assert!(screen.contains("used,") && screen.contains("DISK"), "{screen}");
    drop(file);
    std::fs::remove_file(&path).unwrap();
    let a = s.wait_alert("disk_usage", "ok", Duration::from_secs(10)).await;
    assert!(a["value"].as_f64().unwrap() <= ratio, "{a}");
    // The data directory's size is measured too, by area (walked every second here).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, st) = s.call(reqwest::Method::GET, "/v1/status", None).await;
        if st["disk"]["areas"]["log"].as_u64().is_some_and(|b| b > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the log's bytes were not measured: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
