//! Sluice configuration, in layers: compiled-in defaults, then a TOML file, then `SLUICE__SECTION__KEY`
//! environment variables, then command-line flags. Unknown keys and bad values are errors that name the key.
//!
//! Main types: [`Config`] (the whole file), [`ByteSize`] and [`HumanDuration`] (values like `"32MiB"` and
//! `"7d"`), [`FsyncSetting`], [`TopicConfig`] (topics declared in the file).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} not found")]
    FileNotFound(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

/// Everything `sluice serve` reads at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where all state lives: the log, and later the store, indexes and registry.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub limits: Limits,
    pub log: LogConfig,
    pub logging: LoggingConfig,
    /// Topics created at start-up when missing.
    pub topics: Vec<TopicConfig>,
    /// Settings shared by every stream job.
    pub stream: StreamConfig,
    /// Stream jobs created at start-up when missing (`sql = "CREATE JOB ..."`).
    pub jobs: Vec<JobConfig>,
    /// The embedded time-series store and SQL queries.
    pub store: StoreConfig,
    /// The four alerts evaluated in-process (`GET /v1/alerts`, `sluice status`).
    pub alerts: AlertsConfig,
    /// Full-text search over the events of chosen topics.
    pub search: SearchConfig,
    /// Distributed tracing: OpenTelemetry OTLP export and sampling of new traces at ingest.
    pub tracing: TracingConfig,
}

/// `[tracing]`: spans of every stage exported over OTLP/HTTP (protobuf), off unless `otlp_endpoint` is set.
/// A W3C `traceparent` arriving with an event is always stored with it; new traces are started at ingest only
/// while export is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://localhost:4318` (spans go to `/v1/traces`); empty: off.
    /// Plain HTTP only (a collector or agent beside the process).
    pub otlp_endpoint: String,
    /// Share of new traces (requests without a `traceparent`) that are sampled, 0 to 1.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How long finished spans wait before they are exported in a batch.
    pub export_interval: HumanDuration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            sample_ratio: 0.01,
            service_name: "sluice".into(),
            export_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// `[search]`: topics with an index definition (here or over `PUT /v1/topics/{topic}/index`) are indexed for
/// full-text search, one index per time partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Feed the indexes; when off, searches still answer over what is indexed.
    pub enabled: bool,
    /// Default time from ingest to searchable (each refresh is a commit of the index), like Elasticsearch's.
    pub refresh_interval: HumanDuration,
    /// Widest index partition (events are routed by their time; retention drops whole partitions). Sparse or
    /// old data (a backfill) fills partitions this wide (ADR 0011).
    pub partition: HumanDuration,
    /// Documents after which a partition is sealed and the next one starts (never narrower than an hour), so
    /// dense data gets partitions of about this many documents.
    pub partition_docs: u64,
    /// Default retention of every index: partitions wholly older are dropped. `"forever"` keeps everything.
    pub retention: Retention,
    /// Indexing memory per topic, shared by its (at most 3) open partition writers; a writer writes a segment
    /// out when its share is full (tantivy's budget, at least 15MiB per writer).
    pub writer_memory: ByteSize,
    /// Indexing threads per open partition writer (fewer when its share of `writer_memory` cannot give each
    /// 15MB). They run at a lower OS priority than ingest and queries, so history is indexed with the CPU they
    /// leave.
    pub indexing_threads: usize,
    /// Background merge threads per open index writer: merges are bounded to this much CPU.
    pub merge_threads: usize,
    /// Longest a search may run.
    pub query_timeout: HumanDuration,
    /// Most hits one page may hold.
    pub max_limit: usize,
    /// Index definitions applied at start-up (a changed definition rebuilds that index from the log).
    pub indexes: Vec<IndexDefinition>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            enabled: true,
            refresh_interval: HumanDuration(Duration::from_secs(1)),
            partition: HumanDuration(Duration::from_secs(28 * 86_400)),
            partition_docs: 2 << 20,
            retention: Retention(None),
            writer_memory: ByteSize(96 << 20),
            indexing_threads: 1,
            merge_threads: 1,
            query_timeout: HumanDuration(Duration::from_secs(5)),
            max_limit: 1000,
            indexes: Vec::new(),
        }
    }
}

/// Which fields of a topic's events are searchable and how. Every field left out is only kept in the stored
/// event. `fields` empty means "pick defaults": from the topic's schema, else from its recent events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexDefinition {
    /// The topic (in the config file; over the API it is the path's).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// Field path (dots reach into nested objects) -> how it is indexed.
    pub fields: std::collections::BTreeMap<String, FieldSpec>,
    /// Fields kept in the stored event shown with each hit; empty keeps the whole event.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stored: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// How one field is indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(rename = "type")]
    pub kind: FieldKind,
    /// For `text`: `default` (split on non-alphanumerics, lowercased), `en_stem` (plus English stemming),
    /// `whitespace`, or `raw` (the whole value is one token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzer: Option<String>,
    /// For `text`: also keep the exact value for facets (like a `.keyword` sub-field).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyword: bool,
}

/// The kinds of indexed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Tokenized full text: terms, phrases, wildcards.
    Text,
    /// The exact value: exact match and facets.
    Keyword,
    /// A number (as f64): range filters.
    Number,
    /// A time (RFC 3339 text or epoch milliseconds): range filters.
    Time,
}

/// `[alerts]`: the four alerts Sluice evaluates itself, the same as `deploy/prometheus/alerts.yml`: consumer lag,
/// end-to-end P99 latency, error rate and disk utilisation. Each is `pending` while its condition holds for less
/// than `for`, then `firing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Events a stream job or sink may be behind its source topic (the worst one counts).
    pub lag_records: u64,
    /// End-to-end P99 (ingest acknowledgement -> committed in a sink), over `window`.
    pub e2e_p99: HumanDuration,
    /// Errors of every stage per ingested event, over `window` (0.001 = 0.1%).
    pub error_rate: f64,
    /// Used share of the data directory's filesystem, as `df` computes it.
    pub disk_used_ratio: f64,
    /// How long a condition must hold before the alert fires.
    #[serde(rename = "for")]
    pub for_: HumanDuration,
    /// The span that rates and the P99 are computed over.
    pub window: HumanDuration,
    /// How often metrics are sampled and the alerts evaluated.
    pub eval_interval: HumanDuration,
    /// How often the data directory is walked to measure its size (the filesystem is read every evaluation).
    pub disk_scan_interval: HumanDuration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            lag_records: 10_000,
            e2e_p99: HumanDuration(Duration::from_millis(500)),
            error_rate: 0.001,
            disk_used_ratio: 0.8,
            for_: HumanDuration(Duration::from_secs(60)),
            window: HumanDuration(Duration::from_secs(300)),
            eval_interval: HumanDuration(Duration::from_secs(5)),
            disk_scan_interval: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// `[store]`: every user topic becomes a table of its raw events and every windowed job a table of its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Feed topics and job results into the store; when off, queries still answer over what is stored.
    pub enabled: bool,
    /// Buffered rows of one table that trigger a flush to a Parquet file.
    pub flush_rows: usize,
    /// Memory of one table's buffered rows that triggers a flush; writers wait for the flush past twice this.
    pub flush_memory: ByteSize,
    /// Buffered rows older than this are flushed.
    pub flush_interval: HumanDuration,
    /// Widest chunk of a raw event table: sparse or old data (a backfill) fills chunks this wide (ADR 0011).
    pub chunk_width: HumanDuration,
    /// Rows after which a raw table's chunk is sealed and the next one starts (never narrower than an hour), so
    /// dense data gets chunks of about this many rows.
    pub chunk_rows: u64,
    /// Widest chunk of a job results table.
    pub results_chunk_width: HumanDuration,
    /// Rows after which a results table's chunk is sealed (each flush rewrites the chunks it touches).
    pub results_chunk_rows: u64,
    /// Default retention of every table: chunks wholly older are dropped. `"forever"` keeps everything.
    pub retention: Retention,
    /// A chunk with this many files is compacted.
    pub compact_min_files: usize,
    /// Longest a query may run.
    pub query_timeout: HumanDuration,
    /// Memory all running queries together may use (hash tables, sorts); a query that needs more fails.
    pub query_memory_limit: ByteSize,
    /// Rows a query answer may hold; longer answers are cut and marked `truncated`.
    pub query_max_rows: usize,
    /// Threads of the query runtime (0: the number of cores).
    pub query_threads: usize,
    /// Per-table settings.
    pub tables: Vec<StoreTableConfig>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            flush_rows: 262_144,
            flush_memory: ByteSize(64 << 20),
            flush_interval: HumanDuration(Duration::from_secs(10)),
            chunk_width: HumanDuration(Duration::from_secs(28 * 86_400)),
            chunk_rows: 4 << 20,
            results_chunk_width: HumanDuration(Duration::from_secs(28 * 86_400)),
            results_chunk_rows: 256 << 10,
            retention: Retention(None),
            compact_min_files: 32,
            query_timeout: HumanDuration(Duration::from_secs(30)),
            query_memory_limit: ByteSize(256 << 20),
            query_max_rows: 100_000,
            query_threads: 0,
            tables: Vec::new(),
        }
    }
}

/// `[[store.tables]]`: settings of one table (a topic name or a job name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTableConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_width: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Tasks per job (a job's `WITH (parallelism = n)` wins); 0 means the number of cores.
    pub parallelism: usize,
    /// How often each job snapshots its state and source offsets.
    pub checkpoint_interval: HumanDuration,
    /// Complete checkpoints kept per job.
    pub keep_checkpoints: usize,
    /// Estimated keyed window state of all jobs together; a job that takes it over fails with an error.
    pub state_memory: ByteSize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            parallelism: 0,
            checkpoint_interval: HumanDuration(Duration::from_secs(10)),
            keep_checkpoints: 3,
            state_memory: ByteSize(128 << 20),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// `CREATE JOB name [WITH (...)] AS SELECT ...`
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: SocketAddr,
}

/// Limits on what one request may carry. Each violation is answered 400 or 413 naming the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: ByteSize,
    /// Request bodies of produce requests held in memory at once (from reading to the durable append); past it
    /// new requests wait. At least `max_body_bytes`.
    pub max_inflight_bytes: ByteSize,
    /// Largest single event (key + value + headers), like Kafka's `message.max.bytes`.
    pub max_event_bytes: ByteSize,
    pub max_events_per_request: usize,
    pub max_json_depth: usize,
    /// Most events one read request returns.
    pub max_read_events: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub default_partitions: u32,
    /// `"always"` (acknowledge after fsync) or an interval such as `"100ms"`.
    pub fsync: FsyncSetting,
    pub segment_bytes: ByteSize,
    pub segment_max_age: HumanDuration,
    /// Delete segments whose newest event was appended longer ago than this; `"forever"` keeps all.
    pub retention: Retention,
    /// Per partition; 0 means no size limit.
    pub retention_bytes: ByteSize,
    /// Create a topic on first produce instead of answering 404.
    pub auto_create_topics: bool,
    /// Appends queued per partition before producers wait.
    pub queue_depth: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `sluice_log=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    /// Defaults to `log.default_partitions`.
    pub partitions: Option<u32>,
    pub retention: Option<Retention>,
    pub retention_bytes: Option<ByteSize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./sluice-data"),
            http: HttpConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            logging: LoggingConfig::default(),
            topics: Vec::new(),
            stream: StreamConfig::default(),
            jobs: Vec::new(),
            store: StoreConfig::default(),
            alerts: AlertsConfig::default(),
            search: SearchConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { addr: "127.0.0.1:8080".parse().expect("valid address") }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: ByteSize(32 << 20),
            max_inflight_bytes: ByteSize(64 << 20),
            max_event_bytes: ByteSize(1 << 20),
            max_events_per_request: 10_000,
            max_json_depth: 64,
            max_read_events: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            default_partitions: 4,
            fsync: FsyncSetting::Always,
            segment_bytes: ByteSize(128 << 20),
            segment_max_age: HumanDuration(Duration::from_secs(3600)),
            retention: Retention(Some(Duration::from_secs(7 * 24 * 3600))),
            retention_bytes: ByteSize(0),
            auto_create_topics: false,
            queue_depth: 256,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads defaults, then `file` (which must exist when given), then `SLUICE__*` environment variables, then
    /// `overrides`, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::FileNotFound(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Env::prefixed("SLUICE__").split("__"));
        if let Some(d) = &overrides.data_dir {
            fig = fig.merge(Serialized::default("data_dir", d));
        }
        if let Some(a) = &overrides.http_addr {
            fig = fig.merge(Serialized::default("http.addr", a.to_string()));
        }
        if let Some(f) = &overrides.log_format {
            fig = fig.merge(Serialized::default("logging.format", f));
        }
        let config: Config = fig.extract().map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: String| Err(ConfigError::Invalid(format!("invalid value for `{key}`: {msg}")));
        if self.limits.max_inflight_bytes.0 < self.limits.max_body_bytes.0 {
            return bad("limits.max_inflight_bytes", "must be at least limits.max_body_bytes".into());
        }
        let s = &self.search;
        if s.refresh_interval.0 < Duration::from_millis(10) {
            return bad("search.refresh_interval", "must be at least 10ms".into());
        }
        if s.partition.0 < Duration::from_secs(60) {
            return bad("search.partition", "must be at least 1m".into());
        }
        if s.writer_memory.0 < 45 << 20 {
            return bad("search.writer_memory", "must be at least 45MiB (15MiB for each of 3 writers)".into());
        }
        if s.partition_docs == 0 {
            return bad("search.partition_docs", "must be greater than 0".into());
        }
        if s.indexing_threads == 0 || s.merge_threads == 0 || s.max_limit == 0 {
            return bad("search", "indexing_threads, merge_threads and max_limit must be greater than 0".into());
        }
        if let Some(i) = s.indexes.iter().find(|i| i.topic.is_empty()) {
            return bad("search.indexes", format!("an index definition has no topic ({} fields)", i.fields.len()));
        }
        let t = &self.tracing;
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return bad("tracing.sample_ratio", format!("{} is not between 0 and 1", t.sample_ratio));
        }
        if !t.otlp_endpoint.is_empty() && !t.otlp_endpoint.starts_with("http://") {
            // The exporter is built without TLS: a collector sidecar or agent on the host is the expected set-up.
            return bad("tracing.otlp_endpoint", format!("`{}` is not an http:// url", t.otlp_endpoint));
        }
        let l = &self.limits;
        if l.max_body_bytes.0 == 0 {
            return bad("limits.max_body_bytes", "must be greater than 0".into());
        }
        if l.max_event_bytes.0 == 0 || l.max_event_bytes.0 > l.max_body_bytes.0 {
            return bad(
                "limits.max_event_bytes",
                format!("must be between 1 and limits.max_body_bytes ({})", l.max_body_bytes),
            );
        }
        if l.max_event_bytes.0 > 64 << 20 {
            return bad("limits.max_event_bytes", "must be at most 64MiB".into());
        }
        if l.max_events_per_request == 0 {
            return bad("limits.max_events_per_request", "must be greater than 0".into());
        }
        if !(1..=1000).contains(&l.max_json_depth) {
            return bad("limits.max_json_depth", format!("must be between 1 and 1000 (got {})", l.max_json_depth));
        }
        if l.max_read_events == 0 {
            return bad("limits.max_read_events", "must be greater than 0".into());
        }
        let g = &self.log;
        if !(1..=10_000).contains(&g.default_partitions) {
            return bad(
                "log.default_partitions",
                format!("must be between 1 and 10000 (got {})", g.default_partitions),
            );
        }
        if g.segment_bytes.0 < 1 << 20 {
            return bad("log.segment_bytes", format!("must be at least 1MiB (got {})", g.segment_bytes));
        }
        if g.queue_depth == 0 {
            return bad("log.queue_depth", "must be greater than 0".into());
        }
        let st = &self.stream;
        if st.parallelism > 256 {
            return bad("stream.parallelism", format!("must be at most 256 (got {})", st.parallelism));
        }
        if st.checkpoint_interval.0 < Duration::from_millis(10) {
            return bad("stream.checkpoint_interval", "must be at least 10ms".into());
        }
        if st.keep_checkpoints == 0 {
            return bad("stream.keep_checkpoints", "must be greater than 0".into());
        }
        if let FsyncSetting::Interval(d) = g.fsync
            && d.0.is_zero()
        {
            return bad("log.fsync", "interval must be greater than 0 (or \"always\")".into());
        }
        let al = &self.alerts;
        if !(0.0..=1.0).contains(&al.error_rate) {
            return bad("alerts.error_rate", format!("must be between 0 and 1 (got {})", al.error_rate));
        }
        if !(0.0..=1.0).contains(&al.disk_used_ratio) {
            return bad("alerts.disk_used_ratio", format!("must be between 0 and 1 (got {})", al.disk_used_ratio));
        }
        if al.eval_interval.0 < Duration::from_millis(100) {
            return bad("alerts.eval_interval", "must be at least 100ms".into());
        }
        if al.window.0 < al.eval_interval.0 * 2 {
            return bad("alerts.window", "must be at least twice alerts.eval_interval".into());
        }
        if al.disk_scan_interval.0 < Duration::from_secs(1) {
            return bad("alerts.disk_scan_interval", "must be at least 1s".into());
        }
        let so = &self.store;
        if so.flush_rows == 0 {
            return bad("store.flush_rows", "must be greater than 0".into());
        }
        if so.flush_interval.0 < Duration::from_millis(10) {
            return bad("store.flush_interval", "must be at least 10ms".into());
        }
        for (key, w) in
            [("store.chunk_width", so.chunk_width.0), ("store.results_chunk_width", so.results_chunk_width.0)]
        {
            if w < Duration::from_secs(1) {
                return bad(key, "must be at least 1s".into());
            }
        }
        if self.stream.state_memory.0 < 1 << 20 {
            return bad("stream.state_memory", format!("must be at least 1MiB (got {})", self.stream.state_memory));
        }
        if so.flush_memory.0 < 1 << 20 {
            return bad("store.flush_memory", format!("must be at least 1MiB (got {})", so.flush_memory));
        }
        if so.chunk_rows == 0 || so.results_chunk_rows == 0 {
            return bad("store", "chunk_rows and results_chunk_rows must be greater than 0".into());
        }
        if so.compact_min_files < 2 {
            return bad("store.compact_min_files", format!("must be at least 2 (got {})", so.compact_min_files));
        }
        if so.query_timeout.0 < Duration::from_millis(10) {
            return bad("store.query_timeout", "must be at least 10ms".into());
        }
        if so.query_memory_limit.0 < 1 << 20 {
            return bad("store.query_memory_limit", format!("must be at least 1MiB (got {})", so.query_memory_limit));
        }
        if so.query_max_rows == 0 {
            return bad("store.query_max_rows", "must be greater than 0".into());
        }
        for (i, t) in so.tables.iter().enumerate() {
            if let Some(w) = t.chunk_width
                && w.0 < Duration::from_secs(1)
            {
                return bad(&format!("store.tables[{i}].chunk_width"), "must be at least 1s".into());
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            if !seen.insert(&t.name) {
                return bad(&format!("topics[{i}].name"), format!("topic `{}` is declared twice", t.name));
            }
            if let Some(p) = t.partitions
                && !(1..=10_000).contains(&p)
            {
                return bad(&format!("topics[{i}].partitions"), format!("must be between 1 and 10000 (got {p})"));
            }
        }
        Ok(())
    }

    /// The config as TOML, for `sluice config check`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
                _ => m.name.to_string(),
            });
            let mut msg = e.kind.to_string();
            if let figment::error::Kind::UnknownField(..) = &e.kind {
                msg = format!("unknown key `{key}`");
            } else if !key.is_empty() {
                msg = format!("invalid value for `{key}`: {msg}");
            }
            match source {
                Some(s) if !s.contains("Serialized") => format!("{msg} (in {s})"),
                _ => msg,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A size in bytes, written as an integer or with a unit: `"512KiB"`, `"32MiB"`, `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (try \"32MiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, KB, MB, GB)")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written like `"100ms"`, `"30s"`, `"1h"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(HumanDuration).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration ({e}); try \"500ms\", \"30s\", \"7d\""))
        })
    }
}

/// Retention by age: a duration, or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl Serialize for Retention {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_str("forever"),
            Some(d) => HumanDuration(d).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "forever" {
            return Ok(Retention(None));
        }
        humantime::parse_duration(&s)
            .map(|d| Retention(Some(d)))
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration or \"forever\" ({e})")))
    }
}

/// `"always"`, or an interval between fsyncs such as `"100ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncSetting {
    Always,
    Interval(HumanDuration),
}

impl Serialize for FsyncSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FsyncSetting::Always => s.serialize_str("always"),
            FsyncSetting::Interval(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FsyncSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "always" {
            return Ok(FsyncSetting::Always);
        }
        humantime::parse_duration(&s).map(|d| FsyncSetting::Interval(HumanDuration(d))).map_err(|_| {
            serde::de::Error::custom(format!("`{s}` is neither \"always\" nor an interval such as \"100ms\""))
        })
    }
}

#[cfg(test)]
// figment's Jail API returns its large error type by value.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    use figment::Jail;

    fn load_str(jail: &mut Jail, toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        jail.create_file("sluice.toml", toml).unwrap();
        for (k, v) in env {
            jail.set_env(k, v);
        }
        Config::load(Some(Path::new("sluice.toml")), &Overrides::default())
    }

    fn err(toml: &str, env: &[(&str, &str)]) -> String {
        let mut out = String::new();
        Jail::expect_with(|jail| {
            out = load_str(jail, toml, env).unwrap_err().to_string();
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_need_no_file() {
        Jail::expect_with(|_| {
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c, Config::default());
            assert_eq!(c.data_dir, PathBuf::from("./sluice-data"));
            assert_eq!(c.limits.max_body_bytes, ByteSize(32 << 20));
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            let toml = "data_dir = \"/a\"\n[log]\ndefault_partitions = 2\nfsync = \"50ms\"\n[[topics]]\nname = \"t\"\npartitions = 3\n";
            let env = [("SLUICE__LOG__DEFAULT_PARTITIONS", "6"), ("SLUICE__LIMITS__MAX_BODY_BYTES", "4MiB")];
            let c = load_str(jail, toml, &env).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/a"));
            assert_eq!(c.log.default_partitions, 6);
            assert_eq!(c.log.fsync, FsyncSetting::Interval(HumanDuration(Duration::from_millis(50))));
            assert_eq!(c.limits.max_body_bytes, ByteSize(4 << 20));
            assert_eq!(c.topics[0].partitions, Some(3));
            let o = Overrides {
                data_dir: Some("/b".into()),
                http_addr: Some("0.0.0.0:9".parse().unwrap()),
                log_format: Some(LogFormat::Json),
            };
            let c = Config::load(Some(Path::new("sluice.toml")), &o).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/b"));
            assert_eq!(c.http.addr.port(), 9);
            assert_eq!(c.logging.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("[log]\nfsynk = \"always\"\n", &[]);
        assert!(e.contains("log.fsynk") && e.contains("sluice.toml"), "{e}");
        let e = err("", &[("SLUICE__LIMITS__MAX_BODY", "1")]);
        assert!(e.contains("limits.max_body") && e.contains("SLUICE__"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err("[log]\nfsync = \"sometimes\"\n", &[]);
        assert!(e.contains("log.fsync") && e.contains("sometimes"), "{e}");
        let e = err("[limits]\nmax_json_depth = 0\n", &[]);
        assert!(e.contains("limits.max_json_depth"), "{e}");
        let e = err("[limits]\nmax_body_bytes = \"12 parsecs\"\n", &[]);
        assert!(e.contains("limits.max_body_bytes"), "{e}");
        let e = err("[http]\naddr = \"nowhere\"\n", &[]);
        assert!(e.contains("http.addr"), "{e}");
        let e = err("[[topics]]\nname = \"a\"\n[[topics]]\nname = \"a\"\n", &[]);
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn tracing_section() {
        assert!(Config::default().tracing.otlp_endpoint.is_empty(), "export is off by default");
        let e = err("[tracing]\nsample_ratio = 1.5\n", &[]);
        assert!(e.contains("tracing.sample_ratio"), "{e}");
        let e = err("[tracing]\notlp_endpoint = \"localhost:4318\"\n", &[]);
        assert!(e.contains("tracing.otlp_endpoint"), "{e}");
        Jail::expect_with(|jail| {
            let env = [("SLUICE__TRACING__SAMPLE_RATIO", "0.5")];
            let c = load_str(jail, "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n", &env).unwrap();
            assert_eq!((c.tracing.otlp_endpoint.as_str(), c.tracing.sample_ratio), ("http://127.0.0.1:4318", 0.5));
            Ok(())
        });
    }

    #[test]
    fn alerts_section_parses() {
        Jail::expect_with(|jail| {
            let toml = "[alerts]\nlag_records = 50\ne2e_p99 = \"250ms\"\nerror_rate = 0.01\ndisk_used_ratio = 0.9\nfor = \"2s\"\nwindow = \"10s\"\neval_interval = \"200ms\"\n";
            let c = load_str(jail, toml, &[("SLUICE__ALERTS__DISK_SCAN_INTERVAL", "5s")]).unwrap();
            let a = &c.alerts;
            assert_eq!(a.lag_records, 50);
            assert_eq!(a.e2e_p99.0, Duration::from_millis(250));
            assert_eq!((a.error_rate, a.disk_used_ratio), (0.01, 0.9));
            assert_eq!(a.for_.0, Duration::from_secs(2));
            assert_eq!(a.window.0, Duration::from_secs(10));
            assert_eq!(a.eval_interval.0, Duration::from_millis(200));
            assert_eq!(a.disk_scan_interval.0, Duration::from_secs(5));
            assert_eq!(Config::default().alerts.lag_records, 10_000);
            Ok(())
        });
        let e = err("[alerts]\nerror_rate = 2\n", &[]);
        assert!(e.contains("alerts.error_rate"), "{e}");
        let e = err("[alerts]\nwindow = \"1s\"\n", &[]);
        assert!(e.contains("alerts.window"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/sluice.toml")), &Overrides::default());
        assert!(matches!(e, Err(ConfigError::FileNotFound(_))));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(ByteSize::parse("32MiB").unwrap(), ByteSize(32 << 20));
        assert_eq!(ByteSize::parse("1000").unwrap(), ByteSize(1000));
        assert_eq!(ByteSize::parse("2 GB").unwrap(), ByteSize(2_000_000_000));
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize(32 << 20).to_string(), "32MiB");
        Jail::expect_with(|jail| {
            let c = load_str(jail, "[log]\nretention = \"forever\"\n", &[]).unwrap();
            assert_eq!(c.log.retention, Retention(None));
            // The TOML printed by `config check` loads back to the same config.
            let printed = Config::default().to_toml();
            assert_eq!(load_str(jail, &printed, &[]).unwrap(), Config::default());
            Ok(())
        });
    }
}
