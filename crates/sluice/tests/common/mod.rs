//! Running the real `sluice` binary in tests: a free port, start, wait until ready.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `sluice serve` on `data` and `127.0.0.1:port`, quiet but for warnings.
pub fn spawn_server(data: &Path, port: u16) -> Child {
    spawn_server_with_env(data, port, &[])
}

/// [`spawn_server`] with extra environment variables, e.g. `("SLUICE__STREAM__PARALLELISM", "2")`.
pub fn spawn_server_with_env(data: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice serve")
}

/// A server process that is SIGKILLed and reaped when dropped, so a test that fails leaves no server behind (an
/// orphan would also keep the test's inherited stderr open).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {base} did not become ready");
}

/// Kill rounds for the SIGKILL tests (`SLUICE_TEST_KILL_ROUNDS`, default 12).
pub fn kill_rounds() -> usize {
    std::env::var("SLUICE_TEST_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// A running `sluice serve` on its own data directory and port, with JSON helpers for its API. Tests add their
/// own helpers with an `impl TestServer` block of their own.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub proc: KillOnDrop,
    pub port: u16,
    pub base: String,
    pub http: reqwest::Client,
}

impl TestServer {
    /// A server on a fresh data directory and port, `env` added to its environment.
    pub async fn start(env: &[(&str, &str)]) -> TestServer {
        TestServer::start_in(tempfile::tempdir().unwrap(), free_port(), env).await
    }

    /// A server on `dir` (a restart keeps its data) and `port`.
    pub async fn start_in(dir: tempfile::TempDir, port: u16, env: &[(&str, &str)]) -> TestServer {
        let proc = spawn_server_with_env(dir.path(), port, env);
        TestServer::attach(dir, port, proc).await
    }

    /// A server the test started itself (with a config file, say), once it is ready.
    pub async fn attach(dir: tempfile::TempDir, port: u16, proc: Child) -> TestServer {
        let proc = KillOnDrop(proc);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        wait_ready(&http, &base).await;
        TestServer { dir, proc, port, base, http }
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with SIGTERM (a graceful shutdown) and hands back its directory and port.
    pub fn stop(self) -> (tempfile::TempDir, u16) {
        let TestServer { dir, mut proc, port, .. } = self;
        // SAFETY: a plain signal to our own child process.
        unsafe { libc::kill(proc.0.id() as i32, libc::SIGTERM) };
        let _ = proc.0.wait();
        (dir, port)
    }

    /// Status and JSON body (`null` when the body is not JSON).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// `POST /v1/query`.
    pub async fn query(&self, sql: &str) -> (u16, serde_json::Value) {
        self.post("/v1/query", serde_json::json!({ "sql": sql })).await
    }

    /// Produces `events` (envelopes) to `topic`; every one must be accepted.
    pub async fn produce(&self, topic: &str, events: Vec<serde_json::Value>) {
        let n = events.len() as u64;
        let (status, v) = self.post(&format!("/v1/topics/{topic}/events"), serde_json::Value::Array(events)).await;
        assert!(status < 300, "produce: {status} {v}");
        assert_eq!(v["accepted"].as_u64(), Some(n), "{v}");
    }
}
