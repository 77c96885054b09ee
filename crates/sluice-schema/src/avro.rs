//! Parsing a schema as registered: validation, its compact text and its canonical form (the registry's notion of
//! "the same schema").

use std::collections::HashSet;
use std::fmt::Write as _;

use apache_avro::Schema;
use apache_avro::schema::{Alias, Name, RecordSchema};

use crate::error::SchemaError;

/// A parsed schema before it has an id.
pub(crate) struct Parsed {
    pub text: String,
    pub schema: Schema,
    pub canonical: String,
}

/// Checks the schema type (only Avro) and parses `text`; an invalid schema is a 42201 with the parser's reason.
pub(crate) fn parse(text: &str, schema_type: Option<&str>) -> Result<Parsed, SchemaError> {
    if let Some(t) = schema_type
        && !t.eq_ignore_ascii_case("AVRO")
    {
        return Err(SchemaError::invalid(format!("schemaType `{t}` is not supported; only AVRO is supported")));
    }
    if text.trim().is_empty() {
        return Err(SchemaError::invalid("Empty schema"));
    }
    let schema = Schema::parse_str(text).map_err(|e| SchemaError::invalid(avro_error_text(&e)))?;
    let canonical = canonical_form(&schema);
    Ok(Parsed { text: compact_json(text), schema, canonical })
}

/// The parser's reason, with its source chain (apache_avro puts the detail of JSON errors in the source).
fn avro_error_text(e: &apache_avro::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            let _ = write!(s, ": {t}");
        }
        src = inner.source();
    }
    s
}

/// `text` (valid JSON) without insignificant whitespace; keys keep their order.
pub(crate) fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in text.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// The registry's canonical form: the Avro Parsing Canonical Form (full names, fixed key order, no whitespace,
/// no `doc`, primitives reduced to their name), *plus* what changes how data is read or interpreted and which
/// Parsing Canonical Form strips: field defaults, enum defaults, aliases (sorted) and logical types (with decimal
/// precision and scale). Two schemas with the same canonical form are the same registered schema.
pub fn canonical_form(schema: &Schema) -> String {
    let mut out = String::new();
    Canon { defined: HashSet::new() }.write(schema, &mut out);
    out
}

struct Canon {
    defined: HashSet<String>,
}

impl Canon {
    fn write(&mut self, s: &Schema, out: &mut String) {
        match s {
            Schema::Null => out.push_str("\"null\""),
            Schema::Boolean => out.push_str("\"boolean\""),
            Schema::Int => out.push_str("\"int\""),
            Schema::Long => out.push_str("\"long\""),
            Schema::Float => out.push_str("\"float\""),
            Schema::Double => out.push_str("\"double\""),
            Schema::Bytes => out.push_str("\"bytes\""),
            Schema::String => out.push_str("\"string\""),
            Schema::Array(a) => {
                out.push_str("{\"type\":\"array\",\"items\":");
                self.write(&a.items, out);
                out.push('}');
            }
            Schema::Map(m) => {
                out.push_str("{\"type\":\"map\",\"values\":");
                self.write(&m.types, out);
                out.push('}');
            }
            Schema::Union(u) => {
                out.push('[');
                for (i, v) in u.variants().iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(v, out);
                }
                out.push(']');
            }
            Schema::Record(r) => self.record(r, out),
            Schema::Enum(e) => {
                if self.reference(&e.name, out) {
                    return;
                }
                out.push_str(",\"type\":\"enum\",\"symbols\":");
                json_string_list(e.symbols.iter().map(String::as_str), out);
                if let Some(d) = &e.default {
                    out.push_str(",\"default\":");
                    json_string(d, out);
                }
                aliases(e.aliases.as_deref(), out);
                out.push('}');
            }
            Schema::Fixed(f) => {
                if self.reference(&f.name, out) {
                    return;
                }
                let _ = write!(out, ",\"type\":\"fixed\",\"size\":{}", f.size);
                aliases(f.aliases.as_deref(), out);
                out.push('}');
            }
            Schema::Decimal(d) => {
                let logical =
                    format!(",\"logicalType\":\"decimal\",\"precision\":{},\"scale\":{}}}", d.precision, d.scale);
                match &*d.inner {
                    Schema::Fixed(f) => {
                        if self.reference(&f.name, out) {
                            return;
                        }
                        let _ = write!(out, ",\"type\":\"fixed\",\"size\":{}", f.size);
                        aliases(f.aliases.as_deref(), out);
                        out.push_str(&logical);
                    }
                    _ => {
                        out.push_str("{\"type\":\"bytes\"");
                        out.push_str(&logical);
                    }
                }
            }
            Schema::BigDecimal => logical("bytes", "big-decimal", out),
            Schema::Uuid => logical("string", "uuid", out),
            Schema::Date => logical("int", "date", out),
            Schema::TimeMillis => logical("int", "time-millis", out),
            Schema::TimeMicros => logical("long", "time-micros", out),
            Schema::TimestampMillis => logical("long", "timestamp-millis", out),
            Schema::TimestampMicros => logical("long", "timestamp-micros", out),
            Schema::TimestampNanos => logical("long", "timestamp-nanos", out),
            Schema::LocalTimestampMillis => logical("long", "local-timestamp-millis", out),
            Schema::LocalTimestampMicros => logical("long", "local-timestamp-micros", out),
            Schema::LocalTimestampNanos => logical("long", "local-timestamp-nanos", out),
            Schema::Duration => out.push_str("{\"type\":\"fixed\",\"size\":12,\"logicalType\":\"duration\"}"),
            Schema::Ref { name } => json_string(&name.fullname(None), out),
        }
    }

    /// Writes a named type already defined as its full name (true), else opens its object with the name.
    fn reference(&mut self, name: &Name, out: &mut String) -> bool {
        let full = name.fullname(None);
        if self.defined.contains(&full) {
            json_string(&full, out);
            return true;
        }
        out.push_str("{\"name\":");
        json_string(&full, out);
        self.defined.insert(full);
        false
    }

    fn record(&mut self, r: &RecordSchema, out: &mut String) {
        if self.reference(&r.name, out) {
            return;
        }
        out.push_str(",\"type\":\"record\",\"fields\":[");
        for (i, f) in r.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_string(&f.name, out);
            out.push_str(",\"type\":");
            self.write(&f.schema, out);
            if let Some(d) = &f.default {
                out.push_str(",\"default\":");
                canonical_json(d, out);
            }
            if let Some(a) = &f.aliases
                && !a.is_empty()
            {
                let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
                a.sort_unstable();
                out.push_str(",\"aliases\":");
                json_string_list(a.into_iter(), out);
            }
            out.push('}');
        }
        out.push(']');
        aliases(r.aliases.as_deref(), out);
        out.push('}');
    }
}

fn logical(base: &str, logical: &str, out: &mut String) {
    let _ = write!(out, "{{\"type\":\"{base}\",\"logicalType\":\"{logical}\"}}");
}

fn aliases(aliases: Option<&[Alias]>, out: &mut String) {
    let Some(a) = aliases.filter(|a| !a.is_empty()) else { return };
    let mut names: Vec<String> = a.iter().map(|a| a.fullname(None)).collect();
    names.sort_unstable();
    out.push_str(",\"aliases\":");
    json_string_list(names.iter().map(String::as_str), out);
}

fn json_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

fn json_string_list<'a>(items: impl Iterator<Item = &'a str>, out: &mut String) {
    out.push('[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(s, out);
    }
    out.push(']');
}

/// JSON with object keys sorted, whatever the map type of `serde_json::Value` is in this build.
fn canonical_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        parse(text, None).unwrap().canonical
    }

    #[test]
    fn compacting_keeps_strings_and_order() {
        let text = "{ \"type\" : \"record\",\n \"name\": \"A b\", \"doc\": \"a \\\" q\\\\\", \"fields\": [] }";
        assert_eq!(compact_json(text), r#"{"type":"record","name":"A b","doc":"a \" q\\","fields":[]}"#);
    }

    #[test]
    fn canonical_form_ignores_layout_docs_and_key_order() {
        let a = r#"{"type":"record","name":"Order","namespace":"shop","doc":"x","fields":[
            {"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}"#;
        let b = r#"{"fields":[{"type":{"type":"long"},"name":"id","doc":"the id"},
            {"default":null,"name":"note","type":["null",{"type":"string"}]}],"name":"shop.Order","type":"record"}"#;
        assert_eq!(canon(a), canon(b));
        assert_eq!(
            canon(a),
            r#"{"name":"shop.Order","type":"record","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}"#
        );
        assert_eq!(canon(r#"{"type":"string"}"#), r#""string""#);
    }

    #[test]
    fn canonical_form_keeps_defaults_aliases_and_logical_types() {
        let base = r#"{"type":"record","name":"R","fields":[{"name":"ts","type":"long"}]}"#;
        let with_default = r#"{"type":"record","name":"R","fields":[{"name":"ts","type":"long","default":0}]}"#;
        let with_alias = r#"{"type":"record","name":"R","fields":[{"name":"ts","type":"long","aliases":["t"]}]}"#;
        let logical = r#"{"type":"record","name":"R","fields":[{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
        let all = [canon(base), canon(with_default), canon(with_alias), canon(logical)];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
            // The Parsing Canonical Form alone would not tell them apart.
            assert_eq!(
                Schema::parse_str(base).unwrap().canonical_form(),
                Schema::parse_str(with_default).unwrap().canonical_form()
            );
        }
    }

    #[test]
    fn recursive_and_referenced_types() {
        let text = r#"{"type":"record","name":"Node","namespace":"t","fields":[
            {"name":"value","type":{"type":"fixed","name":"Hash","size":4}},
            {"name":"other","type":"Hash"},
            {"name":"next","type":["null","Node"],"default":null}]}"#;
        assert_eq!(
            canon(text),
            r#"{"name":"t.Node","type":"record","fields":[{"name":"value","type":{"name":"t.Hash","type":"fixed","size":4}},{"name":"other","type":"t.Hash"},{"name":"next","type":["null","t.Node"],"default":null}]}"#
        );
    }

    #[test]
    fn invalid_schemas_and_types() {
        for (text, needle) in [
            ("", "Empty"),
            ("{", "JSON"),
            (r#"{"type":"record","name":"R"}"#, "fields"),
            (r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Nope"}]}"#, "Nope"),
            (r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}"#, "default"),
            (r#"{"type":"enum","name":"E","symbols":["A","A"]}"#, "A"),
        ] {
            let e = parse(text, None).err().unwrap_or_else(|| panic!("{text} should be invalid"));
            assert_eq!(e.error_code(), 42201);
            assert!(e.to_string().to_lowercase().contains(&needle.to_lowercase()), "{text}: {e}");
        }
        let e = parse(r#""string""#, Some("PROTOBUF")).err().unwrap();
        assert_eq!(e.error_code(), 42201);
        assert!(e.to_string().contains("only AVRO"), "{e}");
        assert!(parse(r#""string""#, Some("AVRO")).is_ok());
    }
}
