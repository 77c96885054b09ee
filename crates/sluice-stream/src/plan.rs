//! A compiled stream job: what to read, which columns to extract from each event, how to filter, group, window
//! and aggregate, and what to output. Built from SQL by [`crate::sql::parse_job`]; executed by the job runner
//! (`sluice-jobs`), which owns all I/O, clocks and state.
//!
//! Per event the runner calls [`JobPlan::extract`] (the input row), [`JobPlan::passes`] (`WHERE`), then either
//! [`StatelessPlan::project`] or, for windowed jobs, [`WindowedPlan::event_time`], [`WindowedPlan::key_values`]
//! and [`crate::agg::AggState::update`] per aggregate; [`WindowedPlan::result_row`] renders a window's result.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::agg::{AggState, AggregateCall};
use crate::datum::{Datum, json_lookup};
use crate::expr::Expr;
use crate::window::{Window, WindowSpec};

/// A parsed and compiled `CREATE JOB name [WITH (...)] AS [INSERT INTO topic] SELECT ...`.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub name: String,
    /// The topic the job reads.
    pub source: String,
    /// Options from `WITH (...)`, defaults filled in.
    pub options: JobOptions,
    /// The input row layout: column `i` of every input row is extracted by `columns[i]`. Expressions over input
    /// rows (`filter`, `time`, keys, aggregate arguments, stateless projections) index into this.
    pub columns: Vec<Column>,
    /// `WHERE`, over input rows. A row passes when it evaluates to `Datum::Bool(true)` (NULL drops it, as SQL).
    pub filter: Option<Expr>,
    pub body: PlanBody,
}

/// Where an input column comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// A field of the event value, by path (`a.b.c` or `a['b']` is `["a", "b", "c"]`). If the path is absent,
    /// the column is `Datum::Null`; for a one-element path naming a metadata column (`event_time`,
    /// `ingest_time`, `_key`, `_partition`, `_offset`) an absent field falls back to that metadata.
    Field(Vec<String>),
    /// Record metadata only. Never produced by `parse_job` (any name may be a value field, so metadata comes
    /// from the `Field` fallback); for plans built by hand.
    Meta(Meta),
}

/// Record metadata a job can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meta {
    /// The record's event timestamp (`Datum::Time`).
    EventTime,
    /// When the log appended the record (`Datum::Time`).
    IngestTime,
    /// The record key as UTF-8 text (`Datum::Str`), NULL if none or not UTF-8.
    Key,
    Partition,
    Offset,
}

#[derive(Debug, Clone)]
pub enum PlanBody {
    /// No GROUP BY: every passing event becomes one output row, written to `output_topic`.
    Stateless(StatelessPlan),
    /// GROUP BY a window (and keys): aggregates per (window, key).
    Windowed(WindowedPlan),
}

#[derive(Debug, Clone)]
pub struct StatelessPlan {
    /// `INSERT INTO` target, else `WITH (output_topic = ...)`, else `{job}.out`.
    pub output_topic: String,
    /// Output columns in SELECT order; `*` (or `topic.*`) is one [`Projection::Star`].
    pub projections: Vec<Projection>,
}

#[derive(Debug, Clone)]
pub enum Projection {
    /// `name` = the expression over the input row.
    Column { name: String, expr: Expr },
    /// `*`: every field of the event value, copied as is (later columns with the same name overwrite them).
    Star,
}

#[derive(Debug, Clone)]
pub struct WindowedPlan {
    pub window: WindowSpec,
    /// The event time, over input rows: the first argument of TUMBLE/HOP/SESSION. Evaluates to `Datum::Time`
    /// or `Datum::Int` (ms) or RFC 3339 `Datum::Str`; anything else (NULL, missing) means processing time.
    pub time: Expr,
    /// GROUP BY keys other than the window, over input rows, with the name they have in the output (their
    /// SELECT alias if selected, else the column name, else `key{i}`).
    pub keys: Vec<(String, Expr)>,
    /// Every aggregate call in SELECT and HAVING, deduplicated.
    pub aggregates: Vec<AggregateCall>,
    /// Output columns in SELECT order, as expressions over *result rows*, laid out as
    /// `[window_start, window_end, key_0..key_k, agg_0..agg_a]` (`window_start`/`window_end` are
    /// `Datum::Time`).
    pub output: Vec<(String, Expr)>,
    /// `HAVING`, over result rows.
    pub having: Option<Expr>,
    /// `INSERT INTO` target, else `WITH (output_topic = ...)`, else `{job}.results`: the changelog of results,
    /// keyed by window and key.
    pub output_topic: String,
}

/// `WITH (...)` options (names case-insensitive, each at most once). Durations accept `'5s'`, `'100ms'`, `'1m'`
/// (humantime), `'1 minute'`, or integer milliseconds (`5000` or `'5000'`), and must be >= 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// `out_of_orderness`: bounded out-of-orderness of event time per partition. Default 5 s.
    pub out_of_orderness_ms: i64,
    /// `allowed_lateness`: how long after its end a window still accepts (and re-emits) late events. Default 0.
    pub allowed_lateness_ms: i64,
    /// `idle_timeout`: after this much processing time without events a partition stops holding back the
    /// watermark. Default 30 s; `0`, `'off'`, `'none'` or `false` disables.
    pub idle_timeout_ms: Option<i64>,
    /// `buffer_timeout`: the longest a partly filled batch or a changed result waits. Default 100 ms.
    pub buffer_timeout_ms: i64,
    /// `parallelism`: tasks processing partitions, 1 to 4096. Default `None` = number of cores.
    pub parallelism: Option<usize>,
    /// `late_topic`: side output of too-late events. `parse_job` fills in the default `{job}.late`; `None` (in
    /// `Default`) means the same.
    pub late_topic: Option<String>,
    /// `hot_retention`: how much recent results the in-memory hot read path keeps. Default 5 min.
    pub hot_retention_ms: i64,
    /// `start`: where a new job starts reading: `'earliest'` (default) or `'latest'`.
    pub start_from_latest: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 0,
            idle_timeout_ms: Some(30_000),
            buffer_timeout_ms: 100,
            parallelism: None,
            late_topic: None,
            hot_retention_ms: 5 * 60_000,
            start_from_latest: false,
        }
    }
}

/// What the log knows about a record besides its value: the metadata columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta<'a> {
    /// Event timestamp, ms.
    pub timestamp: i64,
    /// When the log appended the record, ms.
    pub append_time: i64,
    pub key: Option<&'a [u8]>,
    pub partition: u32,
    pub offset: u64,
}

impl Meta {
    /// The metadata a one-segment field name falls back to when the value lacks it.
    pub fn from_name(name: &str) -> Option<Meta> {
        match name {
            "event_time" => Some(Meta::EventTime),
            "ingest_time" => Some(Meta::IngestTime),
            "_key" => Some(Meta::Key),
            "_partition" => Some(Meta::Partition),
            "_offset" => Some(Meta::Offset),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Meta::EventTime => "event_time",
            Meta::IngestTime => "ingest_time",
            Meta::Key => "_key",
            Meta::Partition => "_partition",
            Meta::Offset => "_offset",
        }
    }

    fn value(self, meta: &RecordMeta) -> Datum {
        match self {
            Meta::EventTime => Datum::Time(meta.timestamp),
            Meta::IngestTime => Datum::Time(meta.append_time),
            Meta::Key => match meta.key.map(std::str::from_utf8) {
                Some(Ok(text)) => Datum::Str(Arc::from(text)),
                _ => Datum::Null,
            },
            Meta::Partition => Datum::Int(i64::from(meta.partition)),
            Meta::Offset => Datum::Int(i64::try_from(meta.offset).unwrap_or(i64::MAX)),
        }
    }
}

impl Column {
    /// This column of one record. Borrows the value: only the leaf is converted.
    pub fn extract(&self, value: &serde_json::Value, meta: &RecordMeta) -> Datum {
        match self {
            Column::Meta(m) => m.value(meta),
            Column::Field(path) => match json_lookup(value, path) {
                Some(v) => Datum::from_json(v),
                None => match path.as_slice() {
                    [name] => Meta::from_name(name).map_or(Datum::Null, |m| m.value(meta)),
                    _ => Datum::Null,
                },
            },
        }
    }
}

impl JobPlan {
    /// Fills `row` (cleared first) with the input row of one record, `columns` in order. Reuse `row` across
    /// records: after the first, only strings and nested JSON allocate.
    pub fn extract(&self, value: &serde_json::Value, meta: &RecordMeta, row: &mut Vec<Datum>) {
        row.clear();
        row.extend(self.columns.iter().map(|c| c.extract(value, meta)));
    }

    /// Whether an input row passes `WHERE`.
    pub fn passes(&self, row: &[Datum]) -> bool {
        self.filter.as_ref().is_none_or(|f| f.eval_cow(row).is_true())
    }

    /// The output topic of either body.
    pub fn output_topic(&self) -> &str {
        match &self.body {
            PlanBody::Stateless(p) => &p.output_topic,
            PlanBody::Windowed(p) => &p.output_topic,
        }
    }
}

impl WindowedPlan {
    /// The event time of an input row in ms, `None` when the time expression gives no time (the runner then uses
    /// the record's timestamp: its ingest time when the producer gave none).
    pub fn event_time(&self, row: &[Datum]) -> Option<i64> {
        self.time.eval_cow(row).as_time_ms()
    }

    /// The key values of an input row, in `keys` order.
    pub fn key_values(&self, row: &[Datum]) -> Vec<Datum> {
        self.keys.iter().map(|(_, e)| e.eval(row)).collect()
    }

    /// The output object for one window and key from its aggregate states (`aggs` in `aggregates` order, `keys`
    /// in `keys` order): `None` when `HAVING` rejects it. Missing keys or states read as NULL.
    pub fn result_row(
        &self,
        window: Window,
        keys: &[Datum],
        aggs: &[AggState],
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut row = Vec::with_capacity(2 + keys.len() + aggs.len());
        row.push(Datum::Time(window.start));
        row.push(Datum::Time(window.end));
        row.extend((0..self.keys.len()).map(|i| keys.get(i).cloned().unwrap_or(Datum::Null)));
        row.extend((0..self.aggregates.len()).map(|i| aggs.get(i).map_or(Datum::Null, AggState::finish)));
        if let Some(having) = &self.having
            && !having.eval_cow(&row).is_true()
        {
            return None;
        }
        Some(self.output.iter().map(|(name, e)| (name.clone(), e.eval_cow(&row).to_json())).collect())
    }
}

impl StatelessPlan {
    /// The output object of one passing record: `*` copies the value's fields, named columns overwrite them.
    pub fn project(&self, value: &serde_json::Value, row: &[Datum]) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for p in &self.projections {
            match p {
                Projection::Star => {
                    if let serde_json::Value::Object(fields) = value {
                        out.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                Projection::Column { name, expr } => {
                    out.insert(name.clone(), expr.eval_cow(row).to_json());
                }
            }
        }
        serde_json::Value::Object(out)
    }
}
