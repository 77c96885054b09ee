//! A real server on a loopback port for HTTP tests, and small request helpers.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sluice_config::Config;
use sluice_log::Storage;
use sluice_server::RunningServer;

pub struct TestServer {
    server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
    storage: Option<Arc<dyn Storage>>,
}

/// A response: status, content type, and the body as JSON (`Null` when it is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(tweak, None).await
    }

    pub async fn start_on(tweak: impl FnOnce(&mut Config), storage: Option<Arc<dyn Storage>>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), tweak, storage).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
        storage: Option<Arc<dyn Storage>>,
    ) -> Self {
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.http.addr = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        let server = match &storage {
            Some(s) => sluice_server::start_with_storage(config, s.clone()).await.unwrap(),
            None => sluice_server::start(config).await.unwrap(),
        };
        let base = format!("http://{}", server.local_addr);
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{base}/readyz")).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        TestServer { server: Some(server), base, http, dir, storage }
    }

    /// Stops the server and starts a new one on the same data directory (and storage).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// [`TestServer::restart`] with a config tweak for the new server (`data_dir` and `http.addr` are set first).
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        self.server.take().unwrap().shutdown().await.unwrap();
        let storage = self.storage.take();
        Self::start_in(self.dir, tweak, storage).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self.http.post(self.url(path)).body(body).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Any request, with an optional body and content type.
    pub async fn send(&self, method: Method, path: &str, body: Option<&str>, content_type: Option<&str>) -> Answer {
        let mut req = self.http.request(method, self.url(path));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let content_type =
            r.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, content_type, text, json }
    }

    pub async fn create_topic(&self, name: &str, partitions: u32) {
        let body = serde_json::json!({"name": name, "partitions": partitions}).to_string();
        let (s, b) = self.post("/v1/topics", body).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    pub async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
    }
}
