//! The log port's conformance suite against the embedded adapter: on real files, on simulated storage (with an
//! fsync interval, so `close` must make acknowledged data survive a power loss), and with tiny segments so every
//! check also crosses segment boundaries and index entries.

use std::sync::Arc;
use std::time::Duration;

use sluice_log::conformance::Fresh;
use sluice_log::{EmbeddedLog, FsyncPolicy, LogOptions, LogStore, SimStorage, StdStorage, Storage};

fn open(root: &str, storage: &SimStorage, opts: &LogOptions) -> Arc<dyn LogStore> {
    let (log, _) = EmbeddedLog::open(root, Arc::new(storage.clone()) as Arc<dyn Storage>, opts.clone())
        .expect("open log on simulated storage");
    Arc::new(log)
}

fn on_sim_storage(opts: LogOptions) -> Fresh {
    let storage = SimStorage::new();
    let log = open("/data/log", &storage, &opts);
    let (guard, lose) = (storage.clone(), storage.clone());
    Fresh::new(log, guard).with_restart(
        move || lose.crash(),
        move || {
            let (storage, opts) = (storage.clone(), opts.clone());
            async move {
                // What the dropped instance wrote after the power loss never reached the disk either.
                storage.crash();
                open("/data/log", &storage, &opts)
            }
        },
    )
}

mod std_storage {
    use super::*;

    async fn make() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let (log, reports) =
            EmbeddedLog::open(dir.path().join("log"), Arc::new(StdStorage) as Arc<dyn Storage>, LogOptions::default())
                .expect("open log on a fresh directory");
        assert!(reports.is_empty(), "a fresh log has no partitions to recover");
        let root = dir.path().join("log");
        // Real files cannot lose power here: the restart checks what a clean reopen finds.
        Fresh::new(Arc::new(log), dir).with_restart(
            || {},
            move || {
                let root = root.clone();
                async move {
                    let storage = Arc::new(StdStorage) as Arc<dyn Storage>;
                    let (log, _) = EmbeddedLog::open(root, storage, LogOptions::default()).expect("reopen the log");
                    Arc::new(log) as Arc<dyn LogStore>
                }
            },
        )
    }

    sluice_log::log_conformance_suite!(make);
}

mod sim_storage {
    use super::*;

    async fn make() -> Fresh {
        on_sim_storage(LogOptions { fsync: FsyncPolicy::Interval(Duration::from_secs(3600)), ..LogOptions::default() })
    }

    sluice_log::log_conformance_suite!(make);
}

mod sim_storage_tiny_segments {
    use super::*;

    async fn make() -> Fresh {
        on_sim_storage(LogOptions { segment_bytes: 300, index_interval_bytes: 64, ..LogOptions::default() })
    }

    sluice_log::log_conformance_suite!(make);
}
