//! Every section of the configuration and its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::*;

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
    /// Where windowed jobs keep their newest results for `GET /v1/jobs/{job}/results`.
    pub hot: HotConfig,
    /// The PostgreSQL wire protocol on the store (psql, Grafana, BI tools, drivers).
    pub postgres: PostgresConfig,
}

/// `[postgres]`: the store answers the PostgreSQL protocol with the same SQL as `/v1/query`. No TLS or passwords
/// yet: keep it on loopback (any user and database name are accepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 5433)) }
    }
}

/// `[hot]`: the hot results of every windowed job, in this process (`memory`) or in Redis (`redis`), where every
/// instance reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotConfig {
    pub backend: HotBackend,
    /// For `redis`: `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub prefix: String,
    /// A job's keys expire this long after its last write (a job dropped while no instance ran leaves nothing).
    pub ttl: HumanDuration,
    /// Longest wait for one Redis command.
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotBackend {
    Memory,
    Redis,
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            backend: HotBackend::Memory,
            url: "redis://127.0.0.1:6379".into(),
            prefix: "sluice".into(),
            ttl: HumanDuration(Duration::from_secs(24 * 3600)),
            timeout: HumanDuration(Duration::from_secs(2)),
        }
    }
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
            hot: HotConfig::default(),
            postgres: PostgresConfig::default(),
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
