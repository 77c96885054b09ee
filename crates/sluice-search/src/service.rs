//! [`EmbeddedSearch`]: the embedded adapter of the search port. It owns every topic's index and its sink, applies
//! definitions from the config and the API, and answers searches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_config::{IndexDefinition, SearchConfig};
use sluice_log::LogStore;
use sluice_schema::reader::{ValueDecoder, ValueFormat, value_format};
use sluice_sink::search::{SearchRequest, SearchService};
use sluice_sink::{PortError, PortErrorKind, RunnerOptions, SinkHandle, SinkRunner};

use crate::error::SearchError;
use crate::index::{IndexOptions, TopicIndex, list_dirs, topic_dir};
use crate::schema::{fields_from_avro, fields_from_samples, validate};
use crate::sink::IndexSink;

/// How often sinks that stopped (their topic was gone, say) are looked at again.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Recent events per partition read to pick the default fields of a JSON topic.
const SAMPLE_PER_PARTITION: usize = 200;

/// What the embedded search needs from the rest of the process.
pub struct SearchParts {
    pub data_dir: PathBuf,
    pub config: SearchConfig,
    pub log: Arc<dyn LogStore>,
    pub decoder: Arc<ValueDecoder>,
}

struct Entry {
    index: Arc<TopicIndex>,
    sink: Option<SinkHandle>,
}

pub struct EmbeddedSearch {
    root: PathBuf,
    config: SearchConfig,
    log: Arc<dyn LogStore>,
    decoder: Arc<ValueDecoder>,
    entries: tokio::sync::Mutex<HashMap<String, Entry>>,
    /// Config indexes whose topic did not exist at start-up: created when it appears.
    pending: parking_lot::Mutex<Vec<IndexDefinition>>,
    /// Searches running at once (they are CPU-bound); a search past its timeout keeps its permit until its thread
    /// is done, so slow searches cannot pile up threads.
    permits: Arc<tokio::sync::Semaphore>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn api(e: SearchError) -> PortError {
    PortError::new(e.kind(), e.code(), e.to_string())
}

fn blocking_failed(e: tokio::task::JoinError) -> PortError {
    PortError::internal(format!("search task failed: {e}"))
}

impl EmbeddedSearch {
    /// Opens every index under `{data_dir}/search`, applies the config's definitions and starts the sinks.
    pub async fn start(parts: SearchParts) -> Result<Arc<EmbeddedSearch>, SearchError> {
        let SearchParts { data_dir, config, log, decoder } = parts;
        let root = data_dir.join("search");
        std::fs::create_dir_all(&root).map_err(|e| SearchError::io(&root, e))?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let this = Arc::new(EmbeddedSearch {
            root: root.clone(),
            config,
            log,
            decoder,
            entries: tokio::sync::Mutex::new(HashMap::new()),
            pending: parking_lot::Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            stop,
        });
        let opened = {
            let this = this.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<(String, TopicIndex)>, SearchError> {
                let mut out = Vec::new();
                for (topic, dir) in list_dirs(&this.root)? {
                    let (_, def) = TopicIndex::read_definition(&dir)?;
                    out.push((topic, TopicIndex::open(&dir, this.options(&def))?));
                }
                Ok(out)
            })
            .await
            .map_err(|e| SearchError::Internal(format!("index open task failed: {e}")))??
        };
        {
            let mut entries = this.entries.lock().await;
            for (topic, index) in opened {
                tracing::info!(topic = %topic, documents = index.documents(), "search index opened");
                entries.insert(topic, Entry { index: Arc::new(index), sink: None });
            }
        }
        for def in this.config.indexes.clone() {
            let topic = def.topic.clone();
            match this.apply(&topic, def, true).await {
                Ok(_) => {}
                // A deleted topic must not stop the server from starting; its index comes back with the topic.
                Err(e) if e.code == "topic_not_found" => {
                    tracing::warn!(topic = %topic, "the config defines a search index on a topic that does not exist");
                    this.pending
                        .lock()
                        .push(this.config.indexes.iter().find(|d| d.topic == topic).cloned().unwrap_or_default());
                }
                Err(e) => {
                    return Err(SearchError::InvalidDefinition(format!(
                        "index of topic `{topic}` in the config: {}",
                        e.message
                    )));
                }
            }
        }
        this.start_sinks().await;
        let weak = Arc::downgrade(&this);
        let mut stop = this.stop.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let Some(this) = weak.upgrade() else { return };
                this.apply_pending_config().await;
                this.map_waiting().await;
                this.start_sinks().await;
            }
        });
        Ok(this)
    }

    fn options(&self, def: &IndexDefinition) -> IndexOptions {
        let c = &self.config;
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        IndexOptions {
            refresh_interval: def.refresh_interval.unwrap_or(c.refresh_interval).0,
            partition_ms: ms(def.partition.unwrap_or(c.partition).0).max(60_000),
            partition_docs: c.partition_docs,
            retention_ms: def.retention.unwrap_or(c.retention).0.map(ms),
            writer_memory: c.writer_memory.0 as usize,
            indexing_threads: c.indexing_threads,
            merge_threads: c.merge_threads,
        }
    }

    /// Creates the config's indexes whose topics appeared since start-up.
    async fn apply_pending_config(&self) {
        let pending = self.pending.lock().clone();
        for def in pending {
            if self.log.topic(&def.topic).await.is_err() {
                continue;
            }
            self.pending.lock().retain(|d| d.topic != def.topic);
            if let Err(e) = self.apply(&def.topic, def.clone(), true).await {
                tracing::warn!(topic = %def.topic, error = %e.message, "cannot create the config's search index");
            }
        }
    }

    /// Starts the sink of every index whose topic exists and that has none running.
    async fn start_sinks(&self) {
        if !self.config.enabled || *self.stop.borrow() {
            return;
        }
        let mut entries = self.entries.lock().await;
        for (topic, e) in entries.iter_mut() {
            if e.sink.as_ref().is_some_and(|s| !s.is_finished()) {
                continue;
            }
            if e.index.definition.fields.is_empty() || self.log.topic(topic).await.is_err() {
                continue;
            }
            e.sink = Some(self.spawn_sink(topic, e.index.clone()));
        }
    }

    /// Maps the indexes created with `{}` on a topic that had neither a schema nor events, once it has some (like
    /// Elasticsearch's dynamic mapping, with the rules of [`fields_from_samples`]): the index is made anew with
    /// those fields and indexes the topic from its start.
    async fn map_waiting(&self) {
        let waiting: Vec<IndexDefinition> = {
            let entries = self.entries.lock().await;
            entries
                .values()
                .filter(|e| e.index.definition.fields.is_empty())
                .map(|e| e.index.definition.clone())
                .collect()
        };
        for mut def in waiting {
            let topic = def.topic.clone();
            match self.default_fields(&topic).await {
                Ok(fields) if fields.is_empty() => continue,
                Ok(fields) => def.fields = fields,
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e.message, "cannot read events to map a search index");
                    continue;
                }
            }
            tracing::info!(topic = %topic, fields = def.fields.len(), "search index mapped from the first events");
            if let Err(e) = self.apply(&topic, def, false).await {
                tracing::warn!(topic = %topic, error = %e.message, "cannot map the search index");
            }
        }
    }

    fn spawn_sink(&self, topic: &str, index: Arc<TopicIndex>) -> SinkHandle {
        let refresh = index.opts.refresh_interval;
        let opts = RunnerOptions {
            batch_records: 16_384,
            // Ticks drive refreshes: a few per refresh interval keeps the time to searchable close to it.
            buffer_timeout: (refresh / 4).clamp(Duration::from_millis(5), Duration::from_millis(100)),
            ..RunnerOptions::default()
        };
        let writer = Box::new(IndexSink::new(index, self.decoder.clone()));
        tracing::info!(topic = %topic, "search sink started");
        SinkRunner::spawn("search", topic, self.log.clone(), writer, opts)
    }

    /// Creates or replaces an index. `keep_same`: an identical definition keeps the index as it is.
    async fn apply(&self, topic: &str, def: IndexDefinition, keep_same: bool) -> Result<Value, PortError> {
        self.log.topic(topic).await?;
        let mut entries = self.entries.lock().await;
        if def.fields.is_empty() && entries.contains_key(topic) {
            // `{}` asks for defaults; an existing index already has a definition.
            drop(entries);
            return self.index(topic).await;
        }
        let mut def = def;
        def.topic = topic.to_string();
        if def.fields.is_empty() {
            // No schema and no events yet: the index waits, mapped from its first events (`map_waiting`).
            def.fields = self.default_fields(topic).await?;
        }
        if !def.fields.is_empty() {
            validate(&def).map_err(api)?;
        }
        if keep_same && entries.get(topic).is_some_and(|e| e.index.definition == def) {
            drop(entries);
            return self.index(topic).await;
        }
        if let Some(old) = entries.remove(topic) {
            tracing::info!(topic = %topic, "search index definition changed: rebuilding from the log");
            self.drop_entry(old).await.map_err(api)?;
        }
        let dir = topic_dir(&self.root, topic);
        let opts = self.options(&def);
        let t = topic.to_string();
        let index = tokio::task::spawn_blocking(move || {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| SearchError::io(&dir, e))?;
            }
            TopicIndex::create(&dir, &t, def, opts)
        })
        .await
        .map_err(blocking_failed)?
        .map_err(api)?;
        let index = Arc::new(index);
        let sink = (self.config.enabled && !*self.stop.borrow() && !index.definition.fields.is_empty())
            .then(|| self.spawn_sink(topic, index.clone()));
        entries.insert(topic.to_string(), Entry { index, sink });
        drop(entries);
        self.index(topic).await
    }

    async fn drop_entry(&self, e: Entry) -> Result<(), SearchError> {
        if let Some(s) = e.sink {
            s.stop().await;
        }
        let index = e.index;
        tokio::task::spawn_blocking(move || {
            index.close()?;
            std::fs::remove_dir_all(&index.dir).map_err(|err| SearchError::io(&index.dir, err))
        })
        .await
        .map_err(|e| SearchError::Internal(format!("index drop task failed: {e}")))?
    }

    async fn default_fields(
        &self,
        topic: &str,
    ) -> Result<std::collections::BTreeMap<String, sluice_config::FieldSpec>, PortError> {
        if let Some(s) = self.decoder.reader_schema(topic) {
            return Ok(fields_from_avro(&s.schema));
        }
        let desc = self.log.describe_topic(topic).await?;
        let mut samples = Vec::new();
        for p in &desc.partition_details {
            let from = p.high_watermark.saturating_sub(SAMPLE_PER_PARTITION as u64).max(p.log_start_offset);
            let Ok(r) = self.log.read(topic, p.partition, from, SAMPLE_PER_PARTITION, 4 << 20).await else { continue };
            let mut buf = Vec::new();
            for rec in r.records {
                let v = if value_format(&rec.value) == ValueFormat::Json {
                    serde_json::from_slice::<Value>(&rec.value).ok()
                } else {
                    buf.clear();
                    self.decoder
                        .decode_avro(&rec.value, None, &mut buf)
                        .ok()
                        .and_then(|_| serde_json::from_slice::<Value>(&buf).ok())
                };
                samples.extend(v);
            }
        }
        Ok(fields_from_samples(samples.iter()))
    }

    async fn status(&self, topic: &str, e: &Entry) -> Value {
        let sink = e.sink.as_ref().map(|s| s.status());
        let index = e.index.clone();
        let (parts, docs) =
            tokio::task::spawn_blocking(move || (index.partition_info(), index.documents())).await.unwrap_or_default();
        let committed = e.index.committed_offsets();
        let (mut done, mut total) = (0u64, 0u64);
        if let Ok(d) = self.log.describe_topic(topic).await {
            for p in d.partition_details {
                let at = committed.get(&p.partition).copied().unwrap_or(0).clamp(p.log_start_offset, p.high_watermark);
                done += at - p.log_start_offset;
                total += p.high_watermark - p.log_start_offset;
            }
        }
        let lag = total - done;
        let state = match &sink {
            None if e.index.definition.fields.is_empty() => "waiting_for_events",
            None => "stopped",
            Some(s) if s.state == "stopped" => "stopped",
            Some(_) if lag > 0 => "indexing",
            Some(_) => "live",
        };
        let o = &e.index.opts;
        json!({
            "topic": topic,
            "definition": e.index.definition,
            "refresh_interval_ms": o.refresh_interval.as_millis() as u64,
            "partition_ms": o.partition_ms,
            "retention_ms": o.retention_ms,
            "state": state,
            "documents": docs,
            "lag": lag,
            "progress": if total == 0 { 1.0 } else { done as f64 / total as f64 },
            "committed_offsets": committed,
            "errors": sink.as_ref().map_or(0, |s| s.errors),
            "last_error": sink.and_then(|s| s.last_error),
            "partitions": parts,
        })
    }
}

#[async_trait]
impl SearchService for EmbeddedSearch {
    async fn search(&self, req: SearchRequest) -> Result<Value, PortError> {
        let started = Instant::now();
        let result = self.search_inner(req, started).await;
        let outcome = result.as_ref().map_or_else(|e| e.code, |_| "ok");
        crate::metrics::SEARCH_SECONDS.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn put_index(&self, topic: &str, definition: IndexDefinition) -> Result<Value, PortError> {
        if !definition.topic.is_empty() && definition.topic != topic {
            return Err(PortError::invalid(
                "invalid_index_definition",
                format!("definition names topic `{}` but the path names `{topic}`", definition.topic),
            ));
        }
        self.apply(topic, definition, true).await
    }

    async fn index(&self, topic: &str) -> Result<Value, PortError> {
        let entries = self.entries.lock().await;
        let e = entries.get(topic).ok_or_else(|| api(SearchError::NoIndex(topic.to_string())))?;
        Ok(self.status(topic, e).await)
    }

    async fn indexes(&self) -> Result<Vec<Value>, PortError> {
        let entries = self.entries.lock().await;
        let mut topics: Vec<&String> = entries.keys().collect();
        topics.sort();
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            out.push(self.status(t, &entries[t]).await);
        }
        Ok(out)
    }

    async fn delete_index(&self, topic: &str) -> Result<(), PortError> {
        let e = self.entries.lock().await.remove(topic).ok_or_else(|| api(SearchError::NoIndex(topic.to_string())))?;
        self.drop_entry(e).await.map_err(api)?;
        tracing::info!(topic = %topic, "search index deleted");
        Ok(())
    }

    async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let mut entries = self.entries.lock().await;
        for (topic, e) in entries.iter_mut() {
            if let Some(s) = e.sink.take() {
                s.stop().await;
            }
            let index = e.index.clone();
            match tokio::task::spawn_blocking(move || index.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(topic = %topic, error = %err, "search index close failed"),
                Err(err) => tracing::warn!(topic = %topic, error = %err, "search index close task failed"),
            }
        }
    }
}

impl EmbeddedSearch {
    async fn search_inner(&self, req: SearchRequest, started: Instant) -> Result<Value, PortError> {
        if req.limit == 0 || req.limit > self.config.max_limit {
            return Err(PortError::invalid(
                "invalid_limit",
                format!("limit {} is not between 1 and {}", req.limit, self.config.max_limit),
            ));
        }
        if let (Some(f), Some(t)) = (req.from, req.to)
            && f >= t
        {
            return Err(PortError::invalid("invalid_time_range", format!("from ({f}) is not before to ({t})")));
        }
        let index = {
            let entries = self.entries.lock().await;
            entries
                .get(&req.topic)
                .map(|e| e.index.clone())
                .ok_or_else(|| api(SearchError::NoIndex(req.topic.clone())))?
        };
        let timeout = self.config.query_timeout.0;
        // The budget starts once the index is in hand: waiting for an index change is not search time.
        let deadline = Instant::now() + timeout;
        let permit = match tokio::time::timeout(timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(PortError::new(
                    PortErrorKind::Unavailable,
                    "search_unavailable",
                    "search is shutting down",
                ));
            }
            Err(_) => return Err(api(SearchError::Timeout(timeout.as_millis() as u64))),
        };
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::query::run(&index, &req, deadline)
        });
        // The collectors stop at the deadline; the grace covers fetching the page.
        let mut answer = match tokio::time::timeout(timeout + Duration::from_millis(500), task).await {
            Ok(r) => r.map_err(blocking_failed)?.map_err(api)?,
            Err(_) => return Err(api(SearchError::Timeout(timeout.as_millis() as u64))),
        };
        if let Some(o) = answer.as_object_mut() {
            o.insert("took_ms".into(), json!(started.elapsed().as_secs_f64() * 1000.0));
        }
        Ok(answer)
    }
}
