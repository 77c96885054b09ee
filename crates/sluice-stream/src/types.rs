//! Static kinds of a windowed job's result columns, known from its plan before any event arrives, so readers of
//! its changelog (the store's results table) can show every column from the moment the job exists.
//!
//! Events are schemaless, so a kind is a best guess: `None` when it depends on event values no schema describes
//! (a bare event field with no known type, `coalesce` of such fields, ...). Evaluation never disagrees with a
//! `Some` kind except by yielding NULL.

use crate::agg::AggFunc;
use crate::expr::{CastType, Expr, Func, TimeField};
use crate::plan::{Column, JobPlan, Meta, PlanBody};

/// The kind of value a column holds, as its JSON form is read back by a changelog reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    Int,
    Float,
    Text,
    /// Milliseconds since the epoch; in JSON, RFC 3339 text.
    Time,
}

impl JobPlan {
    /// Every output column of a windowed job in SELECT order with its kind, or `None` for a stateless job.
    /// `field` gives the kind of an event field by path when a schema (or earlier data) knows it.
    pub fn result_kinds(
        &self,
        field: &dyn Fn(&[String]) -> Option<ValueKind>,
    ) -> Option<Vec<(String, Option<ValueKind>)>> {
        let PlanBody::Windowed(w) = &self.body else { return None };
        let input = |i: usize| -> Option<ValueKind> {
            match self.columns.get(i)? {
                Column::Meta(m) => Some(meta_kind(*m)),
                Column::Field(path) => field(path).or_else(|| match path.as_slice() {
                    // An absent one-element field named like metadata falls back to it (see `Column::Field`).
                    [name] => Meta::from_name(name).map(meta_kind),
                    _ => None,
                }),
            }
        };
        let keys: Vec<Option<ValueKind>> = w.keys.iter().map(|(_, e)| kind_of(e, &input)).collect();
        let aggs: Vec<Option<ValueKind>> = w
            .aggregates
            .iter()
            .map(|a| match a.func {
                AggFunc::Count | AggFunc::CountDistinct => Some(ValueKind::Int),
                AggFunc::Avg | AggFunc::ApproxPercentile => Some(ValueKind::Float),
                AggFunc::Sum => match a.arg.as_ref().and_then(|e| kind_of(e, &input)) {
                    Some(ValueKind::Int) => Some(ValueKind::Int),
                    Some(ValueKind::Float) => Some(ValueKind::Float),
                    _ => None,
                },
                AggFunc::Min | AggFunc::Max => a.arg.as_ref().and_then(|e| kind_of(e, &input)),
            })
            .collect();
        let result = |i: usize| -> Option<ValueKind> {
            match i {
                0 | 1 => Some(ValueKind::Time),
                i if i - 2 < keys.len() => keys[i - 2],
                i => aggs.get(i - 2 - keys.len()).copied().flatten(),
            }
        };
        Some(w.output.iter().map(|(name, e)| (name.clone(), kind_of(e, &result))).collect())
    }
}

fn meta_kind(m: Meta) -> ValueKind {
    match m {
        Meta::EventTime | Meta::IngestTime => ValueKind::Time,
        Meta::Key => ValueKind::Text,
        Meta::Partition | Meta::Offset => ValueKind::Int,
    }
}

/// The kind `e` evaluates to over rows whose column `i` has kind `column(i)`.
fn kind_of(e: &Expr, column: &dyn Fn(usize) -> Option<ValueKind>) -> Option<ValueKind> {
    use ValueKind::*;
    let k = |e: &Expr| kind_of(e, column);
    match e {
        Expr::Literal(d) => match d {
            crate::Datum::Bool(_) => Some(Bool),
            crate::Datum::Int(_) => Some(Int),
            crate::Datum::Float(_) => Some(Float),
            crate::Datum::Str(_) => Some(Text),
            crate::Datum::Time(_) => Some(Time),
            crate::Datum::Null | crate::Datum::Json(_) => None,
        },
        Expr::Column(i) => column(*i),
        Expr::Neg(x) => k(x).filter(|k| matches!(k, Int | Float)),
        Expr::Not(_)
        | Expr::Cmp(..)
        | Expr::And(_)
        | Expr::Or(_)
        | Expr::IsNull { .. }
        | Expr::IsBool { .. }
        | Expr::IsDistinctFrom { .. }
        | Expr::InList { .. }
        | Expr::Between { .. }
        | Expr::Like { .. } => Some(Bool),
        Expr::Concat(..) => Some(Text),
        Expr::Arith(op, a, b) => match (k(a)?, k(b)?) {
            (Int, Int) => Some(Int),
            (Time, Int) if matches!(op, crate::expr::ArithOp::Add | crate::expr::ArithOp::Sub) => Some(Time),
            (Int, Time) if *op == crate::expr::ArithOp::Add => Some(Time),
            (Time, Time) if *op == crate::expr::ArithOp::Sub => Some(Int),
            (Int | Float, Int | Float) => Some(Float),
            _ => None,
        },
        Expr::Case { branches, otherwise, .. } => {
            let mut kinds = branches.iter().map(|(_, then)| then).chain(otherwise.as_deref()).map(k);
            let first = kinds.next()??;
            kinds.all(|x| x == Some(first)).then_some(first)
        }
        Expr::Cast { to, .. } => match to {
            CastType::Int => Some(Int),
            CastType::Float => Some(Float),
            CastType::Text => Some(Text),
            CastType::Bool => Some(Bool),
            CastType::Time => Some(Time),
            CastType::Json => None,
        },
        Expr::Get { .. } => None,
        Expr::Call { func, args } => match func {
            Func::Lower | Func::Upper | Func::Substring | Func::Concat | Func::Trim { .. } | Func::Replace => {
                Some(Text)
            }
            Func::Length | Func::EpochMs => Some(Int),
            Func::StartsWith => Some(Bool),
            Func::Sqrt | Func::Ln | Func::Log10 | Func::Power => Some(Float),
            Func::Abs | Func::Round | Func::Floor | Func::Ceil => {
                args.first().and_then(k).filter(|k| matches!(k, Int | Float))
            }
            Func::DateTrunc(_) | Func::ToTimestamp => Some(Time),
            Func::Extract(TimeField::Epoch | TimeField::Second) => Some(Float),
            Func::Extract(_) => Some(Int),
            Func::Coalesce | Func::NullIf | Func::Greatest | Func::Least => {
                let mut kinds = args.iter().map(k);
                let first = kinds.next()??;
                kinds.all(|x| x == Some(first) || x.is_none()).then_some(first)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_job;

    fn kinds(sql: &str, field: &dyn Fn(&[String]) -> Option<ValueKind>) -> Vec<(String, Option<ValueKind>)> {
        parse_job(sql).unwrap().result_kinds(field).unwrap()
    }

    #[test]
    fn windowed_outputs_have_kinds_from_the_plan_and_known_fields() {
        let sql = "CREATE JOB j AS SELECT window_start, service, count(*) AS n, avg(latency_ms) AS mean, \
                   sum(bytes) AS total, max(level) AS worst, upper(service) AS s, count(*) > 1 AS many \
                   FROM t GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";
        let unknown = kinds(sql, &|_| None);
        let by = |v: &[(String, Option<ValueKind>)], n: &str| v.iter().find(|(c, _)| c == n).unwrap().1;
        assert_eq!(by(&unknown, "window_start"), Some(ValueKind::Time));
        assert_eq!(by(&unknown, "service"), None);
        assert_eq!(by(&unknown, "n"), Some(ValueKind::Int));
        assert_eq!(by(&unknown, "mean"), Some(ValueKind::Float));
        assert_eq!(by(&unknown, "total"), None);
        assert_eq!(by(&unknown, "s"), Some(ValueKind::Text));
        assert_eq!(by(&unknown, "many"), Some(ValueKind::Bool));
        let known = kinds(sql, &|p| match p[0].as_str() {
            "service" | "level" => Some(ValueKind::Text),
            "bytes" => Some(ValueKind::Int),
            _ => None,
        });
        assert_eq!(by(&known, "service"), Some(ValueKind::Text));
        assert_eq!(by(&known, "total"), Some(ValueKind::Int));
        assert_eq!(by(&known, "worst"), Some(ValueKind::Text));
    }

    #[test]
    fn stateless_jobs_have_no_result_columns() {
        assert!(parse_job("CREATE JOB j AS SELECT * FROM t").unwrap().result_kinds(&|_| None).is_none());
    }
}
