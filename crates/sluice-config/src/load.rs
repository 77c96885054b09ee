//! Loading the layers (defaults, file, environment, flags), validating the result and rendering it.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use crate::sections::*;
use crate::units::*;

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
        let h = &self.hot;
        if h.backend == HotBackend::Redis && !(h.url.starts_with("redis://") || h.url.starts_with("unix://")) {
            return bad("hot.url", format!("`{}` is not a redis:// url", h.url));
        }
        if h.ttl.0 < Duration::from_secs(1) || h.timeout.0.is_zero() {
            return bad("hot", "ttl must be at least 1s and timeout greater than 0".into());
        }
        if h.prefix.is_empty() || h.prefix.contains(['{', '}']) {
            return bad("hot.prefix", format!("`{}` must be non-empty without braces", h.prefix));
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
