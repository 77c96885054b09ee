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
