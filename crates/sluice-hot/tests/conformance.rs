//! The hot-results conformance suite on every adapter. Redis runs only when `SLUICE_TEST_REDIS_URL` is set
//! (`.ci/run` sets it); each test gets its own key prefix, so tests share one Redis.

mod memory {
    use std::sync::Arc;

    use sluice_hot::conformance::Fresh;
    use sluice_hot::memory::MemoryHotStore;

    async fn make() -> Fresh {
        Fresh::new(Arc::new(MemoryHotStore::new()), ())
    }

    sluice_hot::hot_conformance_suite!(make);
}

mod redis {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use sluice_hot::conformance::Fresh;
    use sluice_hot::memory::MemoryHotStore;
    use sluice_hot::redis::{RedisHotStore, RedisOptions};

    /// Deletes every key under `prefix`: what a restart of a Redis that keeps nothing on disk does to them.
    async fn delete_prefix(url: String, prefix: String) {
        let client = ::redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = ::redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
        }
    }

    struct Cleanup(String, String);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let (url, prefix) = (self.0.clone(), self.1.clone());
            // Tests run on their own runtime, gone by now: clean up on a thread of our own.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(delete_prefix(url, prefix))
            })
            .join();
        }
    }

    async fn make() -> Fresh {
        let Ok(url) = std::env::var("SLUICE_TEST_REDIS_URL") else {
            eprintln!("SLUICE_TEST_REDIS_URL is not set: checking the in-process adapter instead");
            return Fresh::new(Arc::new(MemoryHotStore::new()), ());
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let prefix = format!("sluice-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let opts = RedisOptions {
            url: url.clone(),
            prefix: prefix.clone(),
            ttl: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
        };
        let store = RedisHotStore::connect(opts).await.expect("redis at SLUICE_TEST_REDIS_URL");
        let (u, p) = (url.clone(), prefix.clone());
        Fresh::new(Arc::new(store), Cleanup(url, prefix)).with_loss(move || delete_prefix(u.clone(), p.clone()))
    }

    sluice_hot::hot_conformance_suite!(make);
}
