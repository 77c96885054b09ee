//! The changelog format of a windowed job: what the job writes to `{job}.results` and what every reader of that
//! topic (the store's results table, the hot results refill, a Kafka consumer outside Sluice) relies on.
//!
//! - Key: JSON `{"window_start", "window_end", <group keys>...}` (times as RFC 3339 text), the identity rows are
//!   upserted by; [`identity`] reads it back.
//! - Value: the result row as a JSON object, or `null` when the row was deleted (a HAVING rejection, a session
//!   that merged into another).
//! - Header [`RESULT_KIND_HEADER`]: a [`ResultKind`]. Every window the watermark passes gets a `final` row
//!   (or `deleted`); rows before that are `partial`. After a crash rows may repeat; the last row per key is the
//!   exact result (ADR 0005).
//! - Timestamp: the window's last millisecond.

use bytes::Bytes;
use serde_json::Value;
use sluice_log::{Record, StoredRecord};
use sluice_stream::Window;
use sluice_stream::datum::Datum;
use sluice_stream::plan::WindowedPlan;

/// Header on changelog records naming their [`ResultKind`].
pub const RESULT_KIND_HEADER: &str = "sluice.result";

/// What a changelog record says about its window and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// The window is still open: the row may change.
    Partial,
    /// The watermark passed the window: the row is settled.
    Final,
    /// The row no longer exists.
    Deleted,
}

impl ResultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Partial => "partial",
            ResultKind::Final => "final",
            ResultKind::Deleted => "deleted",
        }
    }

    /// The kind a changelog record carries (`None` for a record without a valid one).
    pub fn of(record: &StoredRecord) -> Option<ResultKind> {
        let (_, v) = record.headers.iter().find(|(k, _)| k == RESULT_KIND_HEADER)?;
        match v.as_ref() {
            b"partial" => Some(ResultKind::Partial),
            b"final" => Some(ResultKind::Final),
            b"deleted" => Some(ResultKind::Deleted),
            _ => None,
        }
    }
}

/// The group key as the hot results name it: the value's text; several keys joined by `,`, with `\` and `,`
/// inside a value escaped as `\\` and `\,` so different keys never share a name.
pub(crate) fn key_text(key: &[Datum]) -> String {
    if let [one] = key {
        return one.to_key_text();
    }
    let mut s = String::new();
    for (i, d) in key.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        for c in d.to_key_text().chars() {
            if c == ',' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
    }
    s
}

/// Window start, end and key text (as the hot results index rows) of a changelog record key of a job whose group
/// keys are named `key_names`; `None` for a key that is not one.
pub fn identity(key_names: &[&str], key: &[u8]) -> Option<(i64, i64, String)> {
    let k = serde_json::from_slice::<Value>(key).ok()?;
    let start = k.get("window_start").map(Datum::from_json).and_then(|d| d.as_time_ms())?;
    let end = k.get("window_end").map(Datum::from_json).and_then(|d| d.as_time_ms())?;
    let key: Vec<Datum> = key_names.iter().map(|n| k.get(*n).map_or(Datum::Null, Datum::from_json)).collect();
    Some((start, end, key_text(&key)))
}

/// The changelog record key: window bounds and group key as JSON, the identity results are upserted by.
pub(crate) fn key(plan: &WindowedPlan, w: Window, key: &[Datum]) -> Bytes {
    let mut m = serde_json::Map::new();
    m.insert("window_start".into(), Datum::Time(w.start).to_json());
    m.insert("window_end".into(), Datum::Time(w.end).to_json());
    for (name, d) in key_fields(plan).into_iter().zip(key) {
        m.insert(name, d.to_json());
    }
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

/// The names of the group keys in a changelog key, in the plan's order: the plan's names, with the `i`-th made
/// `{name}_{i}` where it repeats an earlier one or a window bound (`a.id, b.id` must both stay in the identity).
/// Pass these to [`identity`].
pub fn key_fields(plan: &WindowedPlan) -> Vec<String> {
    let mut taken: std::collections::HashSet<String> = ["window_start", "window_end"].map(String::from).into();
    let mut out = Vec::with_capacity(plan.keys.len());
    for (i, (name, _)) in plan.keys.iter().enumerate() {
        let name = if taken.contains(name) { format!("{name}_{i}") } else { name.clone() };
        taken.insert(name.clone());
        out.push(name);
    }
    out
}

/// The changelog record of one window and group key: its row (`None` for a deletion) as the value, stamped
/// with the window's last millisecond.
pub(crate) fn record(
    plan: &WindowedPlan,
    w: Window,
    group: &[Datum],
    row: Option<&serde_json::Map<String, Value>>,
    kind: ResultKind,
) -> Record {
    let value = match row {
        Some(m) => serde_json::to_vec(m).unwrap_or_default(),
        None => b"null".to_vec(),
    };
    Record {
        timestamp: w.end.saturating_sub(1),
        key: Some(key(plan, w, group)),
        headers: vec![(RESULT_KIND_HEADER.to_string(), Bytes::from_static(kind.as_str().as_bytes()))],
        value: Bytes::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_its_identity_and_kind() {
        let plan = match sluice_stream::sql::parse_job(
            "CREATE JOB j AS SELECT window_start, service, count(*) AS n FROM t \
             GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service",
        )
        .unwrap()
        .body
        {
            sluice_stream::plan::PlanBody::Windowed(w) => w,
            _ => unreachable!("a windowed job"),
        };
        let w = Window { start: 60_000, end: 120_000 };
        let group = [Datum::Str("a,b".into())];
        for kind in [ResultKind::Partial, ResultKind::Final, ResultKind::Deleted] {
            let row = serde_json::Map::from_iter([("n".to_string(), Value::from(3))]);
            let row = (kind != ResultKind::Deleted).then_some(&row);
            let r = record(&plan, w, &group, row, kind);
            let stored = StoredRecord {
                offset: 0,
                timestamp: r.timestamp,
                append_time: 0,
                key: r.key.clone(),
                headers: r.headers.clone(),
                value: r.value.clone(),
            };
            assert_eq!(ResultKind::of(&stored), Some(kind));
            assert_eq!(r.timestamp, 119_999);
            assert_eq!(identity(&["service"], r.key.as_deref().unwrap()), Some((60_000, 120_000, "a,b".into())));
            assert_eq!(&r.value[..] == b"null", kind == ResultKind::Deleted);
        }
    }

    #[test]
    fn repeated_key_names_stay_apart() {
        // Keys that are grouped by but not selected keep their column names: `id` twice.
        let plan = match sluice_stream::sql::parse_job(
            "CREATE JOB j AS SELECT window_start, count(*) AS n FROM t \
             GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), a.id, b.id",
        )
        .unwrap()
        .body
        {
            sluice_stream::plan::PlanBody::Windowed(w) => w,
            _ => unreachable!("a windowed job"),
        };
        let names = key_fields(&plan);
        assert_eq!(names.len(), 2, "{names:?}");
        assert_ne!(names[0], names[1], "{names:?}");
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let w = Window { start: 0, end: 60_000 };
        let one = key(&plan, w, &[Datum::Int(1), Datum::Int(2)]);
        let other = key(&plan, w, &[Datum::Int(2), Datum::Int(1)]);
        let (_, _, one) = identity(&names, &one).unwrap();
        let (_, _, other) = identity(&names, &other).unwrap();
        assert_ne!(one, other, "two different keys keep two identities");
    }
}
