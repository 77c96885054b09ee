//! Shared helpers: a registry on an embedded log over in-memory (SimStorage) or real (StdStorage) files.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use sluice_log::{EmbeddedLog, LogOptions, LogStore, SimStorage, Storage};
use sluice_schema::Registry;

pub const ROOT: &str = "/sim/log";

pub fn open_log(root: &Path, storage: Arc<dyn Storage>) -> Arc<dyn LogStore> {
    let (log, _) = EmbeddedLog::open(root, storage, LogOptions::default()).expect("log opens");
    Arc::new(log)
}

pub async fn open_registry(root: &Path, storage: Arc<dyn Storage>) -> Registry {
    Registry::open(open_log(root, storage)).await.expect("registry opens")
}

/// A registry on a fresh in-memory log.
pub async fn sim_registry() -> (Registry, SimStorage) {
    let sim = SimStorage::new();
    (open_registry(Path::new(ROOT), Arc::new(sim.clone())).await, sim)
}

/// A record schema `n.R` with the given fields (JSON objects, comma-separated).
pub fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"n","fields":[{fields}]}}"#)
}
