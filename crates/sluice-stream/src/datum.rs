//! [`Datum`]: one SQL value flowing through a job, with the conversions to and from JSON events and results,
//! SQL comparison, and the fixed fingerprint that distinct counting persists.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sketch::{hash_u64, hash64};

/// A SQL value. `Hash`/`Eq` are total and structural (floats compare by bits after normalising `-0.0` to `0.0`
/// and every NaN to one NaN; `Int(1)` and `Float(1.0)` are different values), so datums can be group keys.
/// SQL comparison, which does mix numeric types, is [`Datum::sql_cmp`].
///
/// Serde: an enum, `Json` as its JSON text, so non-self-describing formats (postcard checkpoints) work.
#[derive(Debug, Clone)]
pub enum Datum {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    /// Milliseconds since the Unix epoch; rendered as RFC 3339 text with milliseconds (`...T08:01:00.000Z`).
    Time(i64),
    /// A nested object or array, kept as JSON.
    Json(Arc<serde_json::Value>),
}

/// `-0.0` as `0.0` and one canonical NaN: the bits `Eq`/`Hash` see.
fn float_bits(f: f64) -> u64 {
    if f.is_nan() {
        f64::NAN.to_bits()
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    }
}

impl PartialEq for Datum {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Datum::Null, Datum::Null) => true,
            (Datum::Bool(a), Datum::Bool(b)) => a == b,
            (Datum::Int(a), Datum::Int(b)) | (Datum::Time(a), Datum::Time(b)) => a == b,
            (Datum::Float(a), Datum::Float(b)) => float_bits(*a) == float_bits(*b),
            (Datum::Str(a), Datum::Str(b)) => a == b,
            (Datum::Json(a), Datum::Json(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Datum {}

impl Hash for Datum {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal datums have equal fingerprints (unequal ones may too, e.g. `Int(1)` and `Float(1.0)`).
        state.write_u64(self.fingerprint());
    }
}

/// 2^63: every `i64` is in `[-2^63, 2^63)`, and both bounds are exact doubles.
pub(crate) const TWO_POW_63: f64 = -(i64::MIN as f64);

// Fingerprint type tags, mixed into the value's hash so that e.g. `Int(5)` and `Time(5)` differ.
const TAG_NULL: u64 = 0x6E75_6C6C;
const TAG_BOOL: u64 = 0x626F_6F6C_0000_0000;
const TAG_NUM: u64 = 0x6E75_6D00_0000_0000;
const TAG_FLOAT: u64 = 0x666C_6F61_7400_0000;
const TAG_STR: u64 = 0x7374_7200_0000_0000;
const TAG_TIME: u64 = 0x7469_6D65_0000_0000;
const TAG_JSON: u64 = 0x6A73_6F6E_0000_0000;

impl Datum {
    /// JSON `null`/bool/number (`Int` if it is a JSON integer that fits `i64`, else `Float`)/string; objects and
    /// arrays become `Json` (a copy of that subtree).
    pub fn from_json(v: &serde_json::Value) -> Datum {
        use serde_json::Value;
        match v {
            Value::Null => Datum::Null,
            Value::Bool(b) => Datum::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Datum::Int(i),
                None => n.as_f64().map_or(Datum::Null, Datum::Float),
            },
            Value::String(s) => Datum::Str(Arc::from(s.as_str())),
            Value::Array(_) | Value::Object(_) => Datum::Json(Arc::new(v.clone())),
        }
    }

    /// The JSON form used in results: `Time` as RFC 3339 text (a number of ms if outside chrono's range),
    /// non-finite floats as `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::Int(i) => Value::from(*i),
            Datum::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Datum::Str(s) => Value::String(s.to_string()),
            Datum::Time(t) => format_time(*t).map_or_else(|| Value::from(*t), Value::String),
            Datum::Json(j) => (**j).clone(),
        }
    }

    /// SQL truth: only `Bool(true)` passes a `WHERE`/`HAVING` (NULL and non-booleans do not).
    pub fn is_true(&self) -> bool {
        matches!(self, Datum::Bool(true))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// An event time: `Time`, `Int` (ms since the epoch) or RFC 3339 text; anything else is `None`.
    pub fn as_time_ms(&self) -> Option<i64> {
        match self {
            Datum::Time(t) | Datum::Int(t) => Some(*t),
            Datum::Str(s) => parse_time(s),
            _ => None,
        }
    }

    /// Text for keys and topic record keys: `Str` as is, `Null` as `null`, `Time` as RFC 3339, others as JSON text.
    pub fn to_key_text(&self) -> String {
        match self {
            Datum::Str(s) => s.to_string(),
            Datum::Null => "null".to_string(),
            Datum::Time(t) => format_time(*t).unwrap_or_else(|| t.to_string()),
            Datum::Json(j) => j.to_string(),
            other => other.to_json().to_string(),
        }
    }

    /// SQL ordering: numbers across `Int`/`Float` by value, strings bytewise, times, booleans (`false < true`);
    /// a `Time` against text compares with the text read as a time. `None` for NULL, NaN and incomparable types.
    pub fn sql_cmp(&self, other: &Datum) -> Option<Ordering> {
        match (self, other) {
            (Datum::Int(a), Datum::Int(b)) | (Datum::Time(a), Datum::Time(b)) => Some(a.cmp(b)),
            (Datum::Float(a), Datum::Float(b)) => a.partial_cmp(b),
            (Datum::Int(a), Datum::Float(b)) => cmp_int_float(*a, *b),
            (Datum::Float(a), Datum::Int(b)) => cmp_int_float(*b, *a).map(Ordering::reverse),
            (Datum::Str(a), Datum::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Datum::Bool(a), Datum::Bool(b)) => Some(a.cmp(b)),
            (Datum::Time(a), Datum::Str(b)) => parse_time(b).map(|b| a.cmp(&b)),
            (Datum::Str(a), Datum::Time(b)) => parse_time(a).map(|a| a.cmp(b)),
            _ => None,
        }
    }

    /// SQL `=`: `None` when either side is NULL or the types are incomparable. JSON values compare by equality.
    pub fn sql_eq(&self, other: &Datum) -> Option<bool> {
        match (self, other) {
            (Datum::Json(a), Datum::Json(b)) => Some(a == b),
            _ => self.sql_cmp(other).map(|o| o == Ordering::Equal),
        }
    }

    /// A 64-bit hash that is fixed forever (persisted in `count(DISTINCT)` states): [`hash64`]/[`hash_u64`] of a
    /// canonical encoding, mixed with a type tag. Numbers are canonical across types (`Float(2.0)` hashes as
    /// `Int(2)`, as SQL `2 = 2.0`), JSON objects are hashed with sorted keys. Does not allocate except for `Json`.
    pub fn fingerprint(&self) -> u64 {
        match self {
            Datum::Null => hash_u64(TAG_NULL),
            Datum::Bool(b) => hash_u64(TAG_BOOL | u64::from(*b)),
            Datum::Int(i) => hash_u64(hash_u64(*i as u64) ^ TAG_NUM),
            Datum::Float(f) => float_fingerprint(*f),
            Datum::Str(s) => hash_u64(hash64(s.as_bytes()) ^ TAG_STR),
            Datum::Time(t) => hash_u64(hash_u64(*t as u64) ^ TAG_TIME),
            Datum::Json(j) => {
                let mut buf = Vec::new();
                canonical_json(j, &mut buf);
                hash_u64(hash64(&buf) ^ TAG_JSON)
            }
        }
    }
}

/// An integral float within `i64` range is hashed as that integer.
fn float_fingerprint(f: f64) -> u64 {
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        return hash_u64(hash_u64(f as i64 as u64) ^ TAG_NUM);
    }
    hash_u64(hash_u64(float_bits(f)) ^ TAG_FLOAT)
}

/// Exact comparison of an `i64` with an `f64` (no rounding of large integers).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^63 is exactly representable; every i64 is below it and at or above -2^63.
    if f >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

/// Writes a canonical binary encoding of a JSON value: type tags, lengths, object keys sorted, numbers as in
/// [`Datum::fingerprint`]. Independent of serde_json's map ordering feature.
fn canonical_json(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Null => out.push(b'n'),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            }
            (None, Some(f)) if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) => {
                out.push(b'i');
                out.extend_from_slice(&(f as i64).to_le_bytes());
            }
            (None, f) => {
                out.push(b'd');
                out.extend_from_slice(&float_bits(f.unwrap_or(f64::NAN)).to_le_bytes());
            }
        },
        Value::String(s) => {
            out.push(b's');
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            out.push(b'a');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                canonical_json(item, out);
            }
        }
        Value::Object(map) => {
            out.push(b'o');
            out.extend_from_slice(&(map.len() as u64).to_le_bytes());
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                out.extend_from_slice(&(k.len() as u64).to_le_bytes());
                out.extend_from_slice(k.as_bytes());
                canonical_json(v, out);
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds (`2026-11-28T08:01:00.000Z`); `None` outside chrono's range.
pub fn format_time(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Reads a time from text: RFC 3339 (`T` or space between date and time), or a date and time without zone, or a
/// bare date (both taken as UTC). Sub-millisecond digits are truncated.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// The value at `path` inside `value`: object fields by name, array elements by decimal index. Borrows, so a
/// lookup per event copies nothing but the leaf it returns.
pub(crate) fn json_lookup<'v>(value: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    let mut cur = value;
    for segment in path {
        cur = match cur {
            serde_json::Value::Object(map) => map.get(segment.as_str())?,
            serde_json::Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Text of a float for SQL casts: shortest round-trip digits, `NaN`/`Infinity`/`-Infinity` as Postgres spells them.
pub(crate) fn float_text(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{f}");
    }
}

/// The serialized form: borrowed on the way out, owned on the way in.
#[derive(Serialize)]
enum DatumRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Time(i64),
    Json(String),
}

#[derive(Deserialize)]
enum DatumOwned {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Time(i64),
    Json(String),
}

impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = match self {
            Datum::Null => DatumRef::Null,
            Datum::Bool(b) => DatumRef::Bool(*b),
            Datum::Int(i) => DatumRef::Int(*i),
            Datum::Float(f) => DatumRef::Float(*f),
            Datum::Str(s) => DatumRef::Str(s),
            Datum::Time(t) => DatumRef::Time(*t),
            Datum::Json(j) => DatumRef::Json(j.to_string()),
        };
        r.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match DatumOwned::deserialize(deserializer)? {
            DatumOwned::Null => Datum::Null,
            DatumOwned::Bool(b) => Datum::Bool(b),
            DatumOwned::Int(i) => Datum::Int(i),
            DatumOwned::Float(f) => Datum::Float(f),
            DatumOwned::Str(s) => Datum::Str(Arc::from(s)),
            DatumOwned::Time(t) => Datum::Time(t),
            DatumOwned::Json(text) => {
                let value = serde_json::from_str(&text).map_err(serde::de::Error::custom)?;
                Datum::Json(Arc::new(value))
            }
        })
    }
}

impl From<&str> for Datum {
    fn from(s: &str) -> Self {
        Datum::Str(Arc::from(s))
    }
}

impl From<i64> for Datum {
    fn from(i: i64) -> Self {
        Datum::Int(i)
    }
}

impl From<f64> for Datum {
    fn from(f: f64) -> Self {
        Datum::Float(f)
    }
}

impl From<bool> for Datum {
    fn from(b: bool) -> Self {
        Datum::Bool(b)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;

    use serde_json::json;

    use super::*;

    fn std_hash(d: &Datum) -> u64 {
        let mut h = DefaultHasher::new();
        d.hash(&mut h);
        h.finish()
    }

    #[test]
    fn json_round_trip() {
        assert_eq!(Datum::from_json(&json!(5)), Datum::Int(5));
        assert_eq!(Datum::from_json(&json!(5.5)), Datum::Float(5.5));
        assert_eq!(Datum::from_json(&json!(u64::MAX)), Datum::Float(u64::MAX as f64));
        assert_eq!(Datum::from_json(&json!("a")), Datum::from("a"));
        assert_eq!(Datum::from_json(&json!(null)), Datum::Null);
        assert_eq!(Datum::from_json(&json!({"a": 1})).to_json(), json!({"a": 1}));
        assert_eq!(Datum::Time(1_795_852_860_000).to_json(), json!("2026-11-28T08:01:00.000Z"));
        assert_eq!(Datum::Float(f64::NAN).to_json(), json!(null));
        assert_eq!(Datum::Time(i64::MAX).to_json(), json!(i64::MAX));
    }

    #[test]
    fn times() {
        let t = 1_795_852_860_000;
        assert_eq!(Datum::from("2026-11-28T08:01:00Z").as_time_ms(), Some(t));
        assert_eq!(Datum::from("2026-11-28T09:01:00.000+01:00").as_time_ms(), Some(t));
        assert_eq!(Datum::from("2026-11-28 08:01:00").as_time_ms(), Some(t));
        assert_eq!(Datum::from("2026-11-28").as_time_ms(), Some(t - 8 * 3_600_000 - 60_000));
        assert_eq!(Datum::Int(5).as_time_ms(), Some(5));
        assert_eq!(Datum::from("yesterday").as_time_ms(), None);
        assert_eq!(Datum::Float(5.0).as_time_ms(), None);
        assert_eq!(Datum::Time(t).to_key_text(), "2026-11-28T08:01:00.000Z");
    }

    #[test]
    fn key_text() {
        assert_eq!(Datum::from("a b").to_key_text(), "a b");
        assert_eq!(Datum::Null.to_key_text(), "null");
        assert_eq!(Datum::Int(-3).to_key_text(), "-3");
        assert_eq!(Datum::Float(1.5).to_key_text(), "1.5");
        assert_eq!(Datum::Bool(true).to_key_text(), "true");
        assert_eq!(Datum::from_json(&json!([1, "x"])).to_key_text(), r#"[1,"x"]"#);
    }

    #[test]
    fn total_eq_and_hash() {
        assert_eq!(Datum::Float(-0.0), Datum::Float(0.0));
        assert_eq!(std_hash(&Datum::Float(-0.0)), std_hash(&Datum::Float(0.0)));
        assert_eq!(Datum::Float(f64::NAN), Datum::Float(-f64::NAN));
        assert_eq!(std_hash(&Datum::Float(f64::NAN)), std_hash(&Datum::Float(-f64::NAN)));
        assert_ne!(Datum::Int(1), Datum::Float(1.0));
        assert_ne!(Datum::Int(1), Datum::Time(1));
        assert_ne!(Datum::Int(1).fingerprint(), Datum::Time(1).fingerprint());
        assert_eq!(Datum::Int(2).fingerprint(), Datum::Float(2.0).fingerprint());
        assert_ne!(Datum::Float(2.5).fingerprint(), Datum::Int(2).fingerprint());
        assert_ne!(Datum::from("1").fingerprint(), Datum::Int(1).fingerprint());
        let a = Datum::from_json(&json!({"a": 1, "b": [1.0, "x"]}));
        let b = Datum::from_json(&json!({"b": [1.0, "x"], "a": 1}));
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn sql_comparison() {
        use Ordering::*;
        assert_eq!(Datum::Int(1).sql_cmp(&Datum::Float(1.5)), Some(Less));
        assert_eq!(Datum::Float(2.0).sql_cmp(&Datum::Int(2)), Some(Equal));
        assert_eq!(Datum::Int(i64::MAX).sql_cmp(&Datum::Float(TWO_POW_63)), Some(Less));
        assert_eq!(Datum::Int(i64::MIN).sql_cmp(&Datum::Float(-TWO_POW_63)), Some(Equal));
        assert_eq!(Datum::Int(-1).sql_cmp(&Datum::Float(-1.5)), Some(Greater));
        assert_eq!(Datum::Int(1).sql_cmp(&Datum::Float(f64::NAN)), None);
        assert_eq!(Datum::Time(1_795_852_860_000).sql_cmp(&Datum::from("2026-11-28T08:00:00Z")), Some(Greater));
        assert_eq!(Datum::from("b").sql_cmp(&Datum::from("a")), Some(Greater));
        assert_eq!(Datum::Null.sql_cmp(&Datum::Null), None);
        assert_eq!(Datum::Int(1).sql_cmp(&Datum::from("1")), None);
        assert_eq!(Datum::from_json(&json!([1])).sql_eq(&Datum::from_json(&json!([1]))), Some(true));
    }

    #[test]
    fn serde_round_trip() {
        for d in [
            Datum::Null,
            Datum::Bool(false),
            Datum::Int(-7),
            Datum::Float(2.5),
            Datum::from("héllo"),
            Datum::Time(123),
            Datum::from_json(&json!({"k": [1, 2.5, null]})),
        ] {
            let text = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Datum>(&text).unwrap(), d, "{text}");
        }
    }
}
