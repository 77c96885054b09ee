//! Named types of a parsed schema: lookup of references, full names, and the names a union branch goes by.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;

use crate::error::CodecError;
use crate::types::{Kind, kind};

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
/// go by their underlying type, except `duration`, whose fixed type apache_avro does not keep the name of.
pub(crate) fn branch_tags(schema: &Schema) -> Vec<String> {
    let named = |n: &Name| {
        let full = full_name(n);
        if full == n.name { vec![full] } else { vec![full, n.name.clone()] }
    };
    match kind(schema) {
        Kind::Record(r) => named(&r.name),
        Kind::Enum(e) => named(&e.name),
        Kind::Fixed { name: Some(n), .. } | Kind::Ref(n) => named(n),
        Kind::Fixed { name: None, .. } => vec!["duration".to_string()],
        k => vec![k.type_name().to_string()],
    }
}
