//! From an index definition to a tantivy schema, and from an event to a document.
//!
//! Every index has four internal fields beside the defined ones: `_ts` (event time in ms, fast: time
//! ranges and newest-first order), `_partition` and `_offset` (fast: the document's id within its topic, and the
//! tie-break of the order), `_key` (the record key, exact match), and `_source` (the stored event as JSON).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_config::{FieldKind, FieldSpec, IndexDefinition};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DateTime, TantivyDocument};

use crate::error::SearchError;

pub const TS: &str = "_ts";
pub const PARTITION: &str = "_partition";
pub const OFFSET: &str = "_offset";
pub const KEY: &str = "_key";
pub const SOURCE: &str = "_source";

/// Analyzers a text field may use (tantivy's built-in tokenizers).
pub const ANALYZERS: [&str; 4] = ["default", "en_stem", "whitespace", "raw"];

/// Most fields one index may define.
pub const MAX_FIELDS: usize = 256;

/// Keyword values longer than this are not indexed (like Elasticsearch's `ignore_above`); default definitions
/// keep exact values only for string fields whose samples are all this short.
pub const MAX_KEYWORD_BYTES: usize = 256;

/// Checks a definition; its `fields` must not be empty (defaults are resolved before).
pub fn validate(def: &IndexDefinition) -> Result<(), SearchError> {
    let bad = |m: String| Err(SearchError::InvalidDefinition(m));
    if def.fields.is_empty() {
        return bad("no fields to index".into());
    }
    if def.fields.len() > MAX_FIELDS {
        return bad(format!("{} fields exceed the limit of {MAX_FIELDS}", def.fields.len()));
    }
    for (name, spec) in &def.fields {
        if name.is_empty() || name.starts_with('_') || name.starts_with('-') || name.starts_with('.') {
            return bad(format!("field name `{name}` must not be empty or start with `_`, `-` or `.`"));
        }
        if name.len() > 255 || name.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
            return bad(format!("field name `{name}` must be at most 255 bytes without spaces or `:`"));
        }
        if let Some(a) = &spec.analyzer {
            if spec.kind != FieldKind::Text {
                return bad(format!("field `{name}`: only text fields take an analyzer"));
            }
            if !ANALYZERS.contains(&a.as_str()) {
                return bad(format!("field `{name}`: unknown analyzer `{a}` (one of {})", ANALYZERS.join(", ")));
            }
        }
        if spec.keyword && spec.kind != FieldKind::Text {
            return bad(format!(
                "field `{name}`: `keyword` is an option of text fields (keyword fields are exact already)"
            ));
        }
    }
    if let Some(d) = def.refresh_interval
        && d.0 < std::time::Duration::from_millis(10)
    {
        return bad("refresh_interval must be at least 10ms".into());
    }
    if let Some(d) = def.partition
        && d.0 < std::time::Duration::from_secs(60)
    {
        return bad("partition must be at least 1m".into());
    }
    Ok(())
}

/// A topic's tantivy schema and the handles of its fields.
#[derive(Clone)]
pub struct IndexSchema {
    pub schema: Schema,
    pub ts: Field,
    pub partition: Field,
    pub offset: Field,
    pub key: Field,
    pub source: Field,
    /// Defined fields: path, kind, tantivy field, whether it keeps exact values (facets).
    pub fields: Vec<DefinedField>,
    /// Paths kept in the stored event (empty: all of it).
    pub stored: Vec<String>,
}

#[derive(Clone)]
pub struct DefinedField {
    pub path: String,
    pub kind: FieldKind,
    pub field: Field,
    pub facet: bool,
    pub analyzer: Option<String>,
}

impl IndexSchema {
    pub fn build(def: &IndexDefinition) -> IndexSchema {
        let mut b = Schema::builder();
        // Time ranges run on the fast column (tantivy picks it for a fast field): no inverted index of every ms.
        let ts = b.add_i64_field(TS, FAST);
        let partition = b.add_u64_field(PARTITION, FAST);
        let offset = b.add_u64_field(OFFSET, FAST);
        let key = b.add_text_field(KEY, STRING);
        let source = b.add_bytes_field(SOURCE, STORED);
        let mut fields = Vec::with_capacity(def.fields.len());
        for (path, spec) in &def.fields {
            let (field, facet) = add_field(&mut b, path, spec);
            fields.push(DefinedField {
                path: path.clone(),
                kind: spec.kind,
                field,
                facet,
                analyzer: spec.analyzer.clone(),
            });
        }
        IndexSchema { schema: b.build(), ts, partition, offset, key, source, fields, stored: def.stored.clone() }
    }

    /// The fields a query term without `field:` searches: every text field, or every keyword when none.
    pub fn default_fields(&self) -> Vec<Field> {
        let text: Vec<Field> = self.fields.iter().filter(|f| f.kind == FieldKind::Text).map(|f| f.field).collect();
        if !text.is_empty() {
            return text;
        }
        self.fields.iter().filter(|f| f.kind == FieldKind::Keyword).map(|f| f.field).collect()
    }

    pub fn field(&self, path: &str) -> Option<&DefinedField> {
        self.fields.iter().find(|f| f.path == path)
    }

    /// The document of one event; `value` is its JSON. Values of the wrong type for a field are left out of that
    /// field (the stored event keeps them).
    pub fn document(
        &self,
        timestamp: i64,
        partition: u32,
        offset: u64,
        key: Option<&[u8]>,
        value: &Value,
        raw_json: &[u8],
    ) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_i64(self.ts, timestamp);
        doc.add_u64(self.partition, partition as u64);
        doc.add_u64(self.offset, offset);
        if let Some(k) = key
            && let Ok(k) = std::str::from_utf8(k)
        {
            doc.add_text(self.key, k);
        }
        for f in &self.fields {
            let Some(v) = lookup(value, &f.path) else { continue };
            add_value(&mut doc, f, v);
        }
        if self.stored.is_empty() {
            doc.add_bytes(self.source, raw_json);
        } else {
            let mut kept = Map::new();
            for p in &self.stored {
                if let Some(v) = lookup(value, p) {
                    kept.insert(p.clone(), v.clone());
                }
            }
            doc.add_bytes(self.source, &serde_json::to_vec(&Value::Object(kept)).unwrap_or_default());
        }
        doc
    }
}

fn add_field(b: &mut tantivy::schema::SchemaBuilder, path: &str, spec: &FieldSpec) -> (Field, bool) {
    match spec.kind {
        FieldKind::Text => {
            let analyzer = spec.analyzer.as_deref().unwrap_or("default");
            let indexing = TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions);
            let mut opts = TextOptions::default().set_indexing_options(indexing);
            if spec.keyword {
                opts = opts.set_fast("raw");
            }
            (b.add_text_field(path, opts), spec.keyword)
        }
        FieldKind::Keyword => (b.add_text_field(path, STRING | FAST), true),
        FieldKind::Number => (b.add_f64_field(path, INDEXED | FAST), false),
        FieldKind::Time => (b.add_date_field(path, INDEXED | FAST), false),
    }
}

fn add_value(doc: &mut TantivyDocument, f: &DefinedField, v: &Value) {
    match v {
        Value::Array(items) => {
            for item in items.iter().filter(|i| !i.is_array()) {
                add_value(doc, f, item);
            }
        }
        Value::Null | Value::Object(_) => {}
        _ => match f.kind {
            FieldKind::Text => {
                if let Some(s) = scalar_text(v) {
                    doc.add_text(f.field, s);
                }
            }
            FieldKind::Keyword => {
                if let Some(s) = scalar_text(v)
                    && s.len() <= MAX_KEYWORD_BYTES
                {
                    doc.add_text(f.field, s);
                }
            }
            FieldKind::Number => {
                let n = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
                    _ => None,
                };
                if let Some(n) = n {
                    doc.add_f64(f.field, n);
                }
            }
            FieldKind::Time => {
                if let Some(ms) = time_ms(v) {
                    doc.add_date(f.field, DateTime::from_timestamp_millis(ms));
                }
            }
        },
    }
}

fn scalar_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(std::borrow::Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Epoch milliseconds of a JSON time: an RFC 3339 string or a number of ms.
pub fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// The value at a dotted path: a key holding the whole path wins over nested objects.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    if let Some(x) = obj.get(path) {
        return Some(x);
    }
    let (head, rest) = path.split_once('.')?;
    lookup(obj.get(head)?, rest)
}

/// The default definition of a topic with an Avro schema: strings are text with exact values, enums and booleans
/// keywords, numbers numbers, timestamps times; nested records flatten to dotted paths.
pub fn fields_from_avro(schema: &apache_avro::Schema) -> BTreeMap<String, FieldSpec> {
    use apache_avro::Schema as S;
    sluice_schema::reader::flatten_fields(schema)
        .into_iter()
        .filter_map(|(name, s)| {
            let (kind, keyword) = match s {
                S::String | S::Uuid => (FieldKind::Text, true),
                S::Enum(_) | S::Boolean => (FieldKind::Keyword, false),
                S::Int | S::Long | S::Float | S::Double | S::TimeMillis | S::TimeMicros => (FieldKind::Number, false),
                S::TimestampMillis | S::TimestampMicros | S::LocalTimestampMillis | S::LocalTimestampMicros => {
                    (FieldKind::Time, false)
                }
                _ => return None,
            };
            Some((name, FieldSpec { kind, analyzer: None, keyword }))
        })
        .take(MAX_FIELDS)
        .collect()
}

/// The default definition of a JSON topic from sample events: strings are text (with exact values when every
/// sample is short), numbers numbers, booleans keywords; nested objects flatten to dotted paths. A field seen with
/// different types is text.
pub fn fields_from_samples<'a>(samples: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, FieldSpec> {
    #[derive(Default)]
    struct Seen {
        string: bool,
        long: bool,
        number: bool,
        boolean: bool,
    }
    fn walk(prefix: &str, v: &Value, seen: &mut BTreeMap<String, Seen>, depth: usize) {
        match v {
            Value::Object(m) if depth < 8 => {
                for (k, x) in m {
                    if k.is_empty() || k.starts_with('_') || k.contains(char::is_whitespace) || k.contains(':') {
                        continue;
                    }
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&name, x, seen, depth + 1);
                }
            }
            Value::Array(items) => {
                for i in items.iter().take(16) {
                    walk(prefix, i, seen, depth + 1);
                }
            }
            _ if prefix.is_empty() => {}
            Value::String(s) => {
                if !seen.contains_key(prefix) && seen.len() >= MAX_FIELDS {
                    return;
                }
                let e = seen.entry(prefix.to_string()).or_default();
                e.string = true;
                e.long |= s.len() > MAX_KEYWORD_BYTES;
            }
            Value::Number(_) if seen.contains_key(prefix) || seen.len() < MAX_FIELDS => {
                seen.entry(prefix.to_string()).or_default().number = true;
            }
            Value::Bool(_) if seen.contains_key(prefix) || seen.len() < MAX_FIELDS => {
                seen.entry(prefix.to_string()).or_default().boolean = true;
            }
            _ => {}
        }
    }
    let mut seen = BTreeMap::new();
    for s in samples {
        walk("", s, &mut seen, 0);
    }
    seen.into_iter()
        .map(|(name, s)| {
            let spec = match (s.string, s.number, s.boolean) {
                (false, true, false) => FieldSpec { kind: FieldKind::Number, analyzer: None, keyword: false },
                (false, false, true) => FieldSpec { kind: FieldKind::Keyword, analyzer: None, keyword: false },
                _ => FieldSpec { kind: FieldKind::Text, analyzer: None, keyword: !s.long },
            };
            (name, spec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn samples_pick_types_like_dynamic_mapping() {
        let a = json!({"message": "disk full", "status": 500, "ok": false, "http": {"path": "/a"}, "_meta": 1});
        let b = json!({"message": "x".repeat(300), "status": 404, "ok": true, "mixed": 1});
        let c = json!({"mixed": "one"});
        let f = fields_from_samples([&a, &b, &c]);
        assert_eq!(f["message"], FieldSpec { kind: FieldKind::Text, analyzer: None, keyword: false });
        assert_eq!(f["status"].kind, FieldKind::Number);
        assert_eq!(f["ok"].kind, FieldKind::Keyword);
        assert_eq!(f["http.path"], FieldSpec { kind: FieldKind::Text, analyzer: None, keyword: true });
        assert_eq!(f["mixed"].kind, FieldKind::Text, "a field seen with two types is text");
        assert!(!f.contains_key("_meta"), "underscore names are reserved");
    }

    #[test]
    fn avro_schema_gives_fields() {
        let s = apache_avro::Schema::parse_str(
            r#"{"type":"record","name":"e","fields":[
                {"name":"msg","type":"string"},
                {"name":"level","type":{"type":"enum","name":"l","symbols":["INFO","ERROR"]}},
                {"name":"ms","type":["null","long"]},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"req","type":{"type":"record","name":"r","fields":[{"name":"path","type":"string"}]}},
                {"name":"tags","type":{"type":"array","items":"string"}}]}"#,
        )
        .unwrap();
        let f = fields_from_avro(&s);
        assert_eq!(f["msg"].kind, FieldKind::Text);
        assert!(f["msg"].keyword);
        assert_eq!(f["level"].kind, FieldKind::Keyword);
        assert_eq!(f["ms"].kind, FieldKind::Number);
        assert_eq!(f["at"].kind, FieldKind::Time);
        assert_eq!(f["req.path"].kind, FieldKind::Text);
        assert!(!f.contains_key("tags"));
    }

    #[test]
    fn lookup_prefers_whole_dotted_keys() {
        let v = json!({"a.b": 1, "a": {"b": 2, "c": {"d": 3}}});
        assert_eq!(lookup(&v, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.c.d"), Some(&json!(3)));
        assert_eq!(lookup(&v, "a.x"), None);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut d = IndexDefinition::default();
        assert!(validate(&d).unwrap_err().to_string().contains("no fields"));
        d.fields.insert("_x".into(), FieldSpec { kind: FieldKind::Text, analyzer: None, keyword: false });
        assert!(validate(&d).unwrap_err().to_string().contains("`_x`"));
        d.fields.clear();
        d.fields.insert(
            "n".into(),
            FieldSpec { kind: FieldKind::Number, analyzer: Some("default".into()), keyword: false },
        );
        assert!(validate(&d).unwrap_err().to_string().contains("only text fields"));
        d.fields
            .insert("n".into(), FieldSpec { kind: FieldKind::Text, analyzer: Some("klingon".into()), keyword: false });
        assert!(validate(&d).unwrap_err().to_string().contains("unknown analyzer `klingon`"));
    }
}
