//! Named types of a parsed schema: lookup of references, full names, and the names a union branch goes by.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;

use crate::error::CodecError;

/// Every named type (record, enum, fixed) defined anywhere in a schema, by full name.
pub(crate) struct Names<'s> {
    map: HashMap<String, &'s Schema>,
}

impl<'s> Names<'s> {
    pub(crate) fn collect(schema: &'s Schema) -> Self {
        let mut names = Names { map: HashMap::new() };
        names.walk(schema);
        names
    }

    fn walk(&mut self, schema: &'s Schema) {
        match schema {
            // A record seen before (a recursive one) is not walked again.
            Schema::Record(r) if self.map.insert(full_name(&r.name), schema).is_none() => {
                for f in &r.fields {
                    self.walk(&f.schema);
                }
            }
            Schema::Enum(e) => {
                self.map.insert(full_name(&e.name), schema);
            }
            Schema::Fixed(f) => {
                self.map.insert(full_name(&f.name), schema);
            }
            Schema::Decimal(d) => self.walk(&d.inner),
            Schema::Array(a) => self.walk(&a.items),
            Schema::Map(m) => self.walk(&m.types),
            Schema::Union(u) => u.variants().iter().for_each(|v| self.walk(v)),
            _ => {}
        }
    }

    /// The schema itself, or the definition a reference points to.
    pub(crate) fn deref(&self, schema: &'s Schema) -> Result<&'s Schema, CodecError> {
        match schema {
            Schema::Ref { name } => {
                let full = full_name(name);
                self.map.get(&full).copied().ok_or(CodecError::UnknownType(full))
            }
            _ => Ok(schema),
        }
    }
}

pub(crate) fn full_name(name: &Name) -> String {
    name.fullname(None)
}

/// The name a type goes by in Avro's tagged union form (`{"string": "x"}`, `{"com.acme.Rec": {...}}`): the
/// full name of named types (their short name is accepted too), else the primitive type's name. Logical types
/// go by their underlying type.
pub(crate) fn branch_tags(schema: &Schema) -> Vec<String> {
    let named = |n: &Name| {
        let full = full_name(n);
        if full == n.name { vec![full] } else { vec![full, n.name.clone()] }
    };
    let tag = match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int | Schema::Date | Schema::TimeMillis => "int",
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes | Schema::BigDecimal => "bytes",
        Schema::String | Schema::Uuid => "string",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Duration => "duration",
        Schema::Record(r) => return named(&r.name),
        Schema::Enum(e) => return named(&e.name),
        Schema::Fixed(f) => return named(&f.name),
        Schema::Ref { name } => return named(name),
        Schema::Decimal(d) => return branch_tags(&d.inner),
        Schema::Union(_) => "union",
    };
    vec![tag.to_string()]
}

/// A short description of a type for messages: `long`, `timestamp-millis`, `record com.acme.Rec`.
pub(crate) fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(u) => {
            format!("union [{}]", u.variants().iter().map(describe).collect::<Vec<_>>().join(", "))
        }
        Schema::Record(r) => format!("record {}", full_name(&r.name)),
        Schema::Enum(e) => format!("enum {}", full_name(&e.name)),
        Schema::Fixed(f) => format!("fixed {}", full_name(&f.name)),
        Schema::Ref { name } => full_name(name),
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
