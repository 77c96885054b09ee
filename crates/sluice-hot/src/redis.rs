//! The Redis adapter: every job's hot results in Redis, so that any instance answers `/results` and
//! `/results/latest` for a job another instance runs.
//!
//! Per job (the `{job}` hash tag keeps a job's keys in one Redis Cluster slot), under a configurable prefix:
//! - `meta` (hash): retention, newest window end, longest window, watermark; its absence means the rows are gone;
//! - `rows` (sorted set): every row's member scored by window start; equal scores sort by member, and a member is
//!   the key, then end and start as sortable hex, then the end's text, so a range read is already in (start, key,
//!   end) order;
//! - `data` (hash): member -> row JSON; `ends` (sorted set): members by window end, for eviction;
//! - `k:{key}` (sorted set): one key's members by start, for key reads; `keys` (sorted set): every key.
//!
//! Writes, reads and eviction are Lua scripts (`redis/*.lua`), each atomic, so the rules are those of the
//! in-process adapter: eviction relative to the newest window end, a cutoff read together with the rows.
//! Every key expires `ttl` after the job's last write (per-key sets are renewed in the background), so nothing
//! outlives a job that is gone.
//!
//! One writer task per job applies writes in order through a bounded queue (backpressure on the job while Redis
//! is slow). When Redis is unreachable the writer drops writes instead of stalling the job, probes once a
//! second, and once Redis answers again (or after it restarted empty: `meta` vanished) resolves
//! [`HotResults::lost`], upon which the job refills the rows from its changelog.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};
use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{HotAnswer, HotBatch, HotError, HotReader, HotResults, HotStore, ResultRow, Row};

static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/write.lua")));
static RECENT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/recent.lua")));
static LATEST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/latest.lua")));
static CLEAR: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/clear.lua")));
static TOUCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/touch.lua")));

/// Upserts per script call: a few milliseconds of Redis time at most.
const OPS_PER_CALL: usize = 500;
/// Queued writes per job before the job waits for Redis.
const QUEUE: usize = 64;
/// How often an unreachable Redis is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Where and how long the rows are kept.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` with TLS, where the client is built with it).
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis.
    pub prefix: String,
    /// A job's keys expire this long after its last write.
    pub ttl: Duration,
    /// Longest wait for one Redis command.
    pub timeout: Duration,
}

/// Every job's hot results in one Redis.
#[derive(Clone)]
pub struct RedisHotStore {
    conn: ConnectionManager,
    opts: Arc<RedisOptions>,
}

impl std::fmt::Debug for RedisHotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHotStore").field("prefix", &self.opts.prefix).field("ttl", &self.opts.ttl).finish()
    }
}

impl RedisHotStore {
    /// Connects, failing when Redis does not answer (later losses of the connection are retried).
    pub async fn connect(opts: RedisOptions) -> Result<Self, HotError> {
        let client = ::redis::Client::open(opts.url.as_str())
            .map_err(|e| HotError::Internal(format!("invalid redis url: {e}")))?;
        let where_ = client.get_connection_info().addr.to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(opts.timeout)
            .set_response_timeout(opts.timeout)
            .set_number_of_retries(2)
            .set_max_delay(1_000);
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| HotError::Unavailable(format!("redis at {where_}: {e}")))?;
        let _: String = ::redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| HotError::Unavailable(format!("redis at {where_}: {e}")))?;
        Ok(RedisHotStore { conn, opts: Arc::new(opts) })
    }

    fn keys(&self, job: &str) -> Keys {
        Keys::new(&self.opts.prefix, job)
    }
}

#[async_trait::async_trait]
impl HotStore for RedisHotStore {
    fn open(&self, job: &str, retention_ms: i64) -> Arc<dyn HotResults> {
        let reader = RedisReader { conn: self.conn.clone(), keys: Arc::new(self.keys(job)), opts: self.opts.clone() };
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            reader: reader.clone(),
            retention_ms,
            shared: shared.clone(),
            job: job.to_string(),
            wrote: false,
            down: None,
            clear_pending: false,
            touch_offset: 0,
            last_touch: Instant::now(),
        };
        tokio::spawn(writer.run(rx));
        Arc::new(RedisHot { reader, tx, shared })
    }

    async fn find(&self, job: &str) -> Result<Option<Arc<dyn HotReader>>, HotError> {
        let keys = self.keys(job);
        let mut conn = self.conn.clone();
        let exists: bool = ::redis::cmd("EXISTS")
            .arg(&keys.meta)
            .query_async(&mut conn)
            .await
            .map_err(|e| error(e, self.opts.timeout))?;
        Ok(exists.then(|| {
            Arc::new(RedisReader { conn: self.conn.clone(), keys: Arc::new(keys), opts: self.opts.clone() })
                as Arc<dyn HotReader>
        }))
    }

    async fn forget(&self, job: &str) -> Result<(), HotError> {
        let keys = self.keys(job);
        let mut conn = self.conn.clone();
        keys.clear(&mut conn, "forget", 0, self.opts.ttl).await.map_err(|e| error(e, self.opts.timeout))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

/// The key names of one job.
#[derive(Debug)]
struct Keys {
    meta: String,
    rows: String,
    data: String,
    ends: String,
    keyset: String,
    /// Followed by an encoded key: that key's sorted set.
    per_key: String,
}

impl Keys {
    fn new(prefix: &str, job: &str) -> Self {
        let base = format!("{prefix}:{{{job}}}");
        Keys {
            meta: format!("{base}:meta"),
            rows: format!("{base}:rows"),
            data: format!("{base}:data"),
            ends: format!("{base}:ends"),
            keyset: format!("{base}:keys"),
            per_key: format!("{base}:k:"),
        }
    }

    async fn clear(
        &self,
        conn: &mut ConnectionManager,
        mode: &str,
        retention_ms: i64,
        ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut inv = CLEAR.prepare_invoke();
        inv.key(&self.meta).key(&self.rows).key(&self.data).key(&self.ends).key(&self.keyset);
        inv.arg(&self.per_key).arg(mode).arg(retention_ms).arg(ttl_ms(ttl));
        inv.invoke_async::<i64>(conn).await.map(drop)
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// A key's text with `\0` and `\1` escaped (order preserved), so `\0` can end it inside a member.
fn encode_key(key: &str) -> String {
    if !key.contains(['\0', '\u{1}']) {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        match c {
            '\0' => out.push_str("\u{1}\u{1}"),
            '\u{1}' => out.push_str("\u{1}\u{2}"),
            c => out.push(c),
        }
    }
    out
}

/// `key \0 end start (sortable hex) \0 end`: unique per window and key, ordered by (key, end, start) bytewise;
/// the scripts read the end's decimal text 34 bytes after the first `\0`.
fn member(encoded_key: &str, start: i64, end: i64) -> String {
    let sortable = |t: i64| (t as u64) ^ (1 << 63);
    format!("{encoded_key}\0{:016x}{:016x}\0{end}", sortable(end), sortable(start))
}

/// A key for the read scripts: `=` and the encoded key, or empty for every key (the empty key is a key too).
fn key_arg(key: Option<&str>) -> String {
    key.map_or(String::new(), |k| format!("={}", encode_key(k)))
}

fn error(e: RedisError, timeout: Duration) -> HotError {
    if e.is_timeout() {
        HotError::Timeout { timeout_ms: timeout.as_millis() as u64 }
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        HotError::Unavailable(format!("redis: {e}"))
    } else {
        HotError::Internal(format!("redis: {e}"))
    }
}

/// Reads one job's rows.
#[derive(Clone)]
struct RedisReader {
    conn: ConnectionManager,
    keys: Arc<Keys>,
    opts: Arc<RedisOptions>,
}

impl std::fmt::Debug for RedisReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReader").field("keys", &self.keys.meta).finish()
    }
}

/// `{newest end, retention, watermark, row json...}` as the read scripts return it.
fn answer(reply: Vec<String>) -> Result<HotAnswer, HotError> {
    let mut it = reply.into_iter();
    let mut number = |what: &str| -> Result<Option<i64>, HotError> {
        match it.next().as_deref() {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse::<i64>()
                .map(Some)
                .map_err(|_| HotError::Internal(format!("unreadable {what} in redis: {text:?}"))),
        }
    };
    let newest = number("newest window end")?;
    let retention = number("retention")?;
    let watermark = number("watermark")?;
    let cutoff = newest.map(|n| n.saturating_sub(retention.unwrap_or(0)));
    let rows = it
        .map(|json| match serde_json::from_str::<Map<String, Value>>(&json) {
            Ok(map) => Ok(Arc::new(map)),
            Err(e) => Err(HotError::Internal(format!("unreadable row in redis: {e}"))),
        })
        .collect::<Result<Vec<Row>, _>>()?;
    Ok(HotAnswer { rows, cutoff, watermark })
}

#[async_trait::async_trait]
impl HotReader for RedisReader {
    async fn recent(
        &self,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<HotAnswer, HotError> {
        let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
        let mut inv = RECENT.prepare_invoke();
        inv.key(&self.keys.meta).key(&self.keys.rows).key(&self.keys.data);
        inv.arg(&self.keys.per_key).arg(key_arg(key));
        inv.arg(opt(from)).arg(opt(to)).arg(limit.min(1 << 30));
        let mut conn = self.conn.clone();
        let reply: Vec<String> = inv.invoke_async(&mut conn).await.map_err(|e| error(e, self.opts.timeout))?;
        answer(reply)
    }

    async fn latest(&self, key: Option<&str>) -> Result<HotAnswer, HotError> {
        let mut inv = LATEST.prepare_invoke();
        inv.key(&self.keys.meta).key(&self.keys.data).key(&self.keys.keyset);
        inv.arg(&self.keys.per_key).arg(key_arg(key));
        let mut conn = self.conn.clone();
        let reply: Vec<String> = inv.invoke_async(&mut conn).await.map_err(|e| error(e, self.opts.timeout))?;
        answer(reply)
    }
}

enum Command {
    Write(HotBatch),
    Fill(Vec<ResultRow>),
    Clear(oneshot::Sender<()>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Shared {
    rows: AtomicUsize,
    lost: Notify,
}

/// One job's hot results in Redis, written by this instance.
struct RedisHot {
    reader: RedisReader,
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisHot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHot").field("keys", &self.reader.keys.meta).finish()
    }
}

impl RedisHot {
    async fn send(&self, c: Command) {
        // The writer only ends when every handle is gone.
        let _ = self.tx.send(c).await;
    }

    async fn round_trip(&self, make: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await;
        let _ = rx.await;
    }
}

#[async_trait::async_trait]
impl HotReader for RedisHot {
    async fn recent(
        &self,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<HotAnswer, HotError> {
        self.reader.recent(key, from, to, limit).await
    }

    async fn latest(&self, key: Option<&str>) -> Result<HotAnswer, HotError> {
        self.reader.latest(key).await
    }
}

#[async_trait::async_trait]
impl HotResults for RedisHot {
    async fn write(&self, batch: HotBatch) {
        if !batch.is_empty() {
            self.send(Command::Write(batch)).await;
        }
    }

    async fn fill(&self, rows: Vec<ResultRow>) {
        if !rows.is_empty() {
            self.send(Command::Fill(rows)).await;
        }
    }

    async fn clear(&self) {
        self.round_trip(Command::Clear).await;
    }

    async fn flush(&self) {
        self.round_trip(Command::Flush).await;
    }

    async fn lost(&self) {
        self.shared.lost.notified().await;
    }

    fn len(&self) -> usize {
        self.shared.rows.load(Ordering::Relaxed)
    }
}

/// Applies one job's writes in order.
struct Writer {
    reader: RedisReader,
    retention_ms: i64,
    shared: Arc<Shared>,
    job: String,
    /// A write succeeded since this process opened the job: from then on a missing `meta` means lost rows.
    wrote: bool,
    /// Since when writes are dropped, and when Redis was last probed.
    down: Option<Instant>,
    /// A clear that could not reach Redis: done first when it is back.
    clear_pending: bool,
    touch_offset: u64,
    last_touch: Instant,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Marks the job as present at once, for readers on other instances.
        self.apply(HotBatch::default(), 'w').await;
        let touch_every = self.reader.opts.ttl / 4;
        loop {
            let command = tokio::select! {
                c = rx.recv() => match c { Some(c) => c, None => return },
                _ = tokio::time::sleep(PROBE_EVERY), if self.down.is_some() => {
                    self.probe().await;
                    continue;
                }
            };
            if self.down.is_some() && !self.probe().await {
                // Dropped: the refill after recovery brings these rows back from the changelog.
                if let Command::Clear(_) = command {
                    self.clear_pending = true;
                }
                continue;
            }
            match command {
                Command::Write(batch) => self.apply(batch, 'w').await,
                Command::Fill(rows) => self.apply(HotBatch::upserts(rows), 'f').await,
                Command::Clear(done) => {
                    self.clear().await;
                    let _ = done.send(());
                }
                Command::Flush(done) => {
                    let _ = done.send(());
                }
            }
            if self.last_touch.elapsed() >= touch_every {
                self.touch().await;
            }
        }
    }

    /// True when Redis is reachable (again); probes at most once a second.
    async fn probe(&mut self) -> bool {
        let Some(since) = self.down else { return true };
        if since.elapsed() < PROBE_EVERY {
            return false;
        }
        let mut conn = self.reader.conn.clone();
        let ping: Result<String, _> = ::redis::cmd("PING").query_async(&mut conn).await;
        if ping.is_err() {
            self.down = Some(Instant::now());
            return false;
        }
        self.down = None;
        if self.clear_pending {
            self.clear().await;
        }
        if self.down.is_none() {
            tracing::info!(job = %self.job, "redis reachable again; refilling hot results from the changelog");
            self.shared.lost.notify_one();
        }
        self.down.is_none()
    }

    fn failed(&mut self, e: RedisError) {
        if self.down.is_none() {
            tracing::warn!(job = %self.job, error = %e, "hot results: redis write failed; dropping writes until it answers");
        }
        self.down = Some(Instant::now());
    }

    async fn clear(&mut self) {
        let mut conn = self.reader.conn.clone();
        match self.reader.keys.clear(&mut conn, "keep", self.retention_ms, self.reader.opts.ttl).await {
            Ok(()) => {
                self.clear_pending = false;
                self.shared.rows.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                self.clear_pending = true;
                self.failed(e);
            }
        }
    }

    async fn apply(&mut self, batch: HotBatch, mode: char) {
        let HotBatch { removes, upserts, watermark } = batch;
        let mut removes = removes.into_iter().peekable();
        let mut upserts = upserts.into_iter().peekable();
        let mut watermark = watermark;
        let mut first = true;
        // At least one call (it also marks the job present), then one per chunk, then while eviction has more.
        while first || removes.peek().is_some() || upserts.peek().is_some() {
            first = false;
            let mut inv = self.write_script(mode, watermark.take());
            let chunk: Vec<_> = (&mut removes).take(OPS_PER_CALL).collect();
            inv.arg(chunk.len());
            for (start, end, key) in &chunk {
                inv.arg(member(&encode_key(key), *start, *end)).arg("");
            }
            for r in (&mut upserts).take(OPS_PER_CALL - chunk.len()) {
                let ek = encode_key(&r.key);
                let json = serde_json::to_string(&*r.row).expect("a JSON map serializes");
                inv.arg(r.window_start)
                    .arg(r.window_end)
                    .arg(member(&ek, r.window_start, r.window_end))
                    .arg(ek)
                    .arg(json);
            }
            if !self.call(&inv).await {
                return;
            }
        }
    }

    /// The write script with its keys and leading arguments (the job's settings, mode, watermark); the caller
    /// adds the removals and upserts.
    fn write_script(&self, mode: char, watermark: Option<i64>) -> ::redis::ScriptInvocation<'static> {
        let keys = &self.reader.keys;
        let mut inv = WRITE.prepare_invoke();
        inv.key(&keys.meta).key(&keys.rows).key(&keys.data).key(&keys.ends).key(&keys.keyset);
        inv.arg(&keys.per_key).arg(self.retention_ms).arg(ttl_ms(self.reader.opts.ttl)).arg(mode.to_string());
        inv.arg(watermark.map_or(String::new(), |w| w.to_string()));
        inv
    }

    /// One write script call, repeated while it has more to evict; false when Redis failed.
    async fn call(&mut self, inv: &::redis::ScriptInvocation<'_>) -> bool {
        let mut conn = self.reader.conn.clone();
        let mut reply: Result<(i64, usize, i64), _> = inv.invoke_async(&mut conn).await;
        loop {
            let (missing, rows, more) = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.failed(e);
                    return false;
                }
            };
            self.shared.rows.store(rows, Ordering::Relaxed);
            if missing == 1 && self.wrote {
                tracing::warn!(job = %self.job, "hot results vanished from redis (restart, flush or expiry); refilling");
                self.shared.lost.notify_one();
            }
            self.wrote = true;
            if more == 0 {
                return true;
            }
            // No removals, no upserts: only the next eviction step.
            reply = self.write_script('w', None).arg(0).invoke_async(&mut conn).await;
        }
    }

    async fn touch(&mut self) {
        self.last_touch = Instant::now();
        let mut conn = self.reader.conn.clone();
        loop {
            let mut inv = TOUCH.prepare_invoke();
            inv.key(&self.reader.keys.keyset);
            inv.arg(&self.reader.keys.per_key).arg(self.touch_offset).arg(ttl_ms(self.reader.opts.ttl));
            match inv.invoke_async::<u64>(&mut conn).await {
                Ok(0) => {
                    self.touch_offset = 0;
                    return;
                }
                Ok(next) => self.touch_offset = next,
                Err(e) => {
                    self.failed(e);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_by_key_then_end() {
        let m = |k: &str, s: i64, e: i64| member(&encode_key(k), s, e);
        let mut members = vec![
            m("b", 0, 5),
            m("a", 0, 10),
            m("a", -9, -3),
            m("a\0", 0, 1),
            m("ab", 0, 1),
            m("a", 2, 10),
            m("a\u{1}", 0, 1),
        ];
        members.sort();
        let order =
            [("a", -9, -3), ("a", 0, 10), ("a", 2, 10), ("a\0", 0, 1), ("a\u{1}", 0, 1), ("ab", 0, 1), ("b", 0, 5)];
        assert_eq!(members, order.iter().map(|(k, s, e)| m(k, *s, *e)).collect::<Vec<_>>());
        // The end's decimal text follows the second `\0`, 34 bytes after the first.
        let one = m("k", i64::MIN, -42);
        let cut = one.find('\0').unwrap();
        assert_eq!(&one[cut + 34..], "-42");
    }

    #[test]
    fn encoded_keys_keep_their_order_and_have_no_nul() {
        let keys = ["", "\0", "\0\0", "\u{1}", "\u{1}\0", "\u{2}", "a", "a\0b", "é"];
        for (a, b) in keys.iter().zip(keys.iter().skip(1)) {
            assert!(a < b);
            assert!(encode_key(a) < encode_key(b), "{a:?} {b:?}");
        }
        assert!(keys.iter().all(|k| !encode_key(k).contains('\0')));
    }
}
