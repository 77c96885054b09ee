//! What a schema is underneath, for code that walks schemas: [`kind`] maps a [`Schema`] to its physical
//! (encoded) kind, logical types to the type they annotate, and [`describe`] names a type in messages.
//!
//! Both are meant for compiling plans and checking schemas, not for per-value work.

use apache_avro::Schema;
use apache_avro::schema::{Alias, EnumSchema, Name, RecordSchema};

/// The physical kind of a schema: how its values are encoded. Logical types are mapped to the type they
/// annotate (`date` -> [`Kind::Int`], `decimal` -> its bytes or fixed, `duration` -> a 12-byte fixed, ...).
/// Named types keep their definition; a [`Schema::Ref`] is not resolved (see [`Kind::Ref`]).
#[derive(Debug, Clone, Copy)]
pub enum Kind<'s> {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean,
    /// `int`, and `date`, `time-millis`.
    Int,
    /// `long`, and `time-micros`, `timestamp-*`, `local-timestamp-*`.
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `bytes`, and `big-decimal`, `decimal` on bytes.
    Bytes,
    /// `string`, and `uuid`.
    String,
    /// `fixed`, `decimal` on a fixed, and `duration` (for which apache_avro keeps no name: `name` is `None`).
    Fixed { name: Option<&'s Name>, aliases: &'s [Alias], size: usize },
    /// `enum`.
    Enum(&'s EnumSchema),
    /// `array`, with its items' schema.
    Array(&'s Schema),
    /// `map`, with its values' schema.
    Map(&'s Schema),
    /// A union, with its branches.
    Union(&'s [Schema]),
    /// `record`.
    Record(&'s RecordSchema),
    /// A reference to a named type defined elsewhere in the schema; resolving it is the caller's business.
    Ref(&'s Name),
}

impl Kind<'_> {
    /// The Avro type name of the kind: `int`, `fixed`, `record`, `union`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Int => "int",
            Kind::Long => "long",
            Kind::Float => "float",
            Kind::Double => "double",
            Kind::Bytes => "bytes",
            Kind::String => "string",
            Kind::Fixed { .. } => "fixed",
            Kind::Enum(_) => "enum",
            Kind::Array(_) => "array",
            Kind::Map(_) => "map",
            Kind::Union(_) => "union",
            Kind::Record(_) => "record",
            Kind::Ref(_) => "ref",
        }
    }
}

/// The physical kind of `schema`; see [`Kind`].
pub fn kind(schema: &Schema) -> Kind<'_> {
    match schema {
        Schema::Null => Kind::Null,
        Schema::Boolean => Kind::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Kind::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Kind::Long,
        Schema::Float => Kind::Float,
        Schema::Double => Kind::Double,
        Schema::Bytes | Schema::BigDecimal => Kind::Bytes,
        Schema::String | Schema::Uuid => Kind::String,
        Schema::Fixed(f) => {
            Kind::Fixed { name: Some(&f.name), aliases: f.aliases.as_deref().unwrap_or(&[]), size: f.size }
        }
        Schema::Duration => Kind::Fixed { name: None, aliases: &[], size: 12 },
        Schema::Decimal(d) => kind(&d.inner),
        Schema::Enum(e) => Kind::Enum(e),
        Schema::Array(a) => Kind::Array(&a.items),
        Schema::Map(m) => Kind::Map(&m.types),
        Schema::Union(u) => Kind::Union(u.variants()),
        Schema::Record(r) => Kind::Record(r),
        Schema::Ref { name } => Kind::Ref(name),
    }
}

/// A short description of a type for messages: `long`, `timestamp-millis`, `decimal(10, 2)`, `array<string>`,
/// `map<long>`, `[null, string]`, `record shop.Order`, `enum shop.Status`, `fixed shop.Hash(16)`; a reference
/// is its full name. Named types are not expanded, so recursive schemas are fine.
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(a) => format!("array<{}>", describe(&a.items)),
        Schema::Map(m) => format!("map<{}>", describe(&m.types)),
        Schema::Union(u) => format!("[{}]", u.variants().iter().map(describe).collect::<Vec<_>>().join(", ")),
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}({})", f.name.fullname(None), f.size),
        Schema::Ref { name } => name.fullname(None),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        Schema::BigDecimal => "big-decimal".into(),
        Schema::Uuid => "uuid".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis => "time-millis".into(),
        Schema::TimeMicros => "time-micros".into(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::TimestampNanos => "timestamp-nanos".into(),
        Schema::LocalTimestampMillis => "local-timestamp-millis".into(),
        Schema::LocalTimestampMicros => "local-timestamp-micros".into(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        Schema::Duration => "duration".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    #[test]
    fn logical_types_map_to_what_they_annotate() {
        assert!(matches!(kind(&s(r#"{"type":"int","logicalType":"date"}"#)), Kind::Int));
        assert!(matches!(kind(&s(r#"{"type":"long","logicalType":"timestamp-nanos"}"#)), Kind::Long));
        assert!(matches!(kind(&s(r#"{"type":"string","logicalType":"uuid"}"#)), Kind::String));
        let dec = s(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#);
        assert!(matches!(kind(&dec), Kind::Bytes));
        let dec = s(r#"{"type":"fixed","name":"D","size":8,"logicalType":"decimal","precision":4,"scale":2}"#);
        assert!(matches!(kind(&dec), Kind::Fixed { name: Some(n), size: 8, .. } if n.name == "D"));
        let dur = s(r#"{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}"#);
        assert!(matches!(kind(&dur), Kind::Fixed { name: None, size: 12, .. }));
    }

    #[test]
    fn descriptions() {
        let d = |text: &str| describe(&s(text));
        assert_eq!(d(r#""long""#), "long");
        assert_eq!(d(r#"{"type":"long","logicalType":"timestamp-millis"}"#), "timestamp-millis");
        assert_eq!(d(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#), "decimal(4, 2)");
        assert_eq!(d(r#"{"type":"array","items":"string"}"#), "array<string>");
        assert_eq!(d(r#"{"type":"map","values":{"type":"array","items":"long"}}"#), "map<array<long>>");
        assert_eq!(d(r#"["null","string"]"#), "[null, string]");
        assert_eq!(d(r#"{"type":"record","name":"Order","namespace":"shop","fields":[]}"#), "record shop.Order");
        assert_eq!(d(r#"{"type":"fixed","name":"H","namespace":"shop","size":16}"#), "fixed shop.H(16)");
    }
}
