//! Compiled SQL expressions over a row of [`Datum`]s, built by [`crate::sql::parse_job`].
//!
//! **Evaluation never fails.** Events are schemaless JSON, so a type can only be known per event; a job must
//! not stop because one event carries a string where a number was expected. Every error a database would raise
//! at run time yields `Datum::Null` instead: type mismatches, division by zero, integer overflow, non-finite
//! float results, out-of-range times, invalid casts, bad arguments (`sqrt(-1)`, negative `substring` lengths).
//! NULL then propagates as in SQL, and a `WHERE` that evaluates to NULL drops the event.
//!
//! Semantics follow PostgreSQL where it has one: three-valued logic, `Int op Int` stays `Int` (checked; `/`
//! truncates), mixing with `Float` gives `Float`, `Time ± Int` (ms) gives `Time`, `Time - Time` gives `Int` ms,
//! `||` is NULL if either side is, `concat` skips NULLs, `LIKE` uses `%`/`_` with `\` as the default escape.
//! Differences: `round` of a double rounds half away from zero (Postgres' `rint` rounds half to even), text
//! comparison is bytewise (the "C" collation), and a `Time` compared with text reads the text as a time.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Timelike};

use crate::datum::{Datum, TWO_POW_63, float_text, json_lookup};

/// A compiled expression. `Column(i)` reads `row[i]` (NULL if out of range).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Datum),
    Column(usize),
    /// Unary minus.
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `a AND b AND ...`, flattened.
    And(Vec<Expr>),
    /// `a OR b OR ...`, flattened.
    Or(Vec<Expr>),
    /// `a || b`.
    Concat(Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `x IS [NOT] TRUE` / `x IS [NOT] FALSE`.
    IsBool {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    /// `a IS [NOT] DISTINCT FROM b` (NULL-safe equality).
    IsDistinctFrom {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    /// `LIKE`/`ILIKE`; `compiled` is the pattern when it is a literal, so events do not re-parse it.
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<char>,
        case_insensitive: bool,
        negated: bool,
        compiled: Option<LikePattern>,
    },
    /// Both `CASE` forms: with an operand, a branch matches when `operand = when`.
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        expr: Box<Expr>,
        to: CastType,
    },
    /// A field inside a JSON value computed at run time (`json_value(f(x), '$.a')`); static paths on event
    /// fields are extracted as columns instead.
    Get {
        expr: Box<Expr>,
        path: Vec<String>,
    },
    Call {
        func: Func,
        args: Vec<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// Targets of `CAST`/`::`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    /// `BIGINT`, `INT`, ...: floats round to nearest (half away from zero), text must be an integer.
    Int,
    /// `DOUBLE`, `FLOAT`, `REAL`, `DECIMAL`/`NUMERIC` (no decimal type: they are doubles).
    Float,
    /// `VARCHAR`, `TEXT`, `STRING`: the [`Datum::to_key_text`] form.
    Text,
    /// `BOOLEAN`: text `true/false/t/f/yes/no/on/off/1/0`, numbers `!= 0`.
    Bool,
    /// `TIMESTAMP`/`DATE`: times, ms integers, text as in [`Datum::as_time_ms`].
    Time,
    /// `JSON`: text parsed as JSON, other values as their JSON form.
    Json,
}

/// Scalar functions. Arity is checked when compiling; a wrong arity at run time yields NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Lower,
    Upper,
    /// Characters, not bytes.
    Length,
    /// `(text, from[, count])`, 1-based, as Postgres.
    Substring,
    /// Text of every non-NULL argument.
    Concat,
    /// `(text[, characters])`: strips the characters (default: spaces) from the chosen ends.
    Trim {
        leading: bool,
        trailing: bool,
    },
    /// `(text, from, to)`.
    Replace,
    StartsWith,
    Coalesce,
    NullIf,
    Abs,
    /// `(x[, digits])`.
    Round,
    Floor,
    Ceil,
    Sqrt,
    Ln,
    Log10,
    Power,
    /// Largest non-NULL argument.
    Greatest,
    /// Smallest non-NULL argument.
    Least,
    /// `(time)`, the unit fixed at compile time.
    DateTrunc(TimeUnit),
    /// `(time)`.
    Extract(TimeField),
    /// Seconds since the epoch (number) or text to `Time`.
    ToTimestamp,
    /// `Time` (or time text) to milliseconds since the epoch.
    EpochMs,
}

/// Units of `date_trunc`. Weeks start on Monday (ISO), as in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// Fields of `EXTRACT`. `Epoch` and `Second` are doubles (with the milliseconds as fraction), the rest integers;
/// `DayOfWeek` is 0 for Sunday, `Week` the ISO week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    Epoch,
    Year,
    Quarter,
    Month,
    Week,
    Day,
    DayOfWeek,
    DayOfYear,
    Hour,
    Minute,
    Second,
    Millisecond,
}

const NULL: Datum = Datum::Null;

impl Expr {
    /// Evaluates over `row`. Never fails or panics: see the module docs for what yields NULL.
    pub fn eval(&self, row: &[Datum]) -> Datum {
        self.eval_cow(row).into_owned()
    }

    /// As [`Expr::eval`], but borrows column values and literals instead of cloning them.
    pub fn eval_cow<'a>(&'a self, row: &'a [Datum]) -> Cow<'a, Datum> {
        match self {
            Expr::Literal(d) => Cow::Borrowed(d),
            Expr::Column(i) => Cow::Borrowed(row.get(*i).unwrap_or(&NULL)),
            other => Cow::Owned(other.eval_owned(row)),
        }
    }

    fn eval_owned(&self, row: &[Datum]) -> Datum {
        match self {
            Expr::Literal(d) => d.clone(),
            Expr::Column(i) => row.get(*i).cloned().unwrap_or(Datum::Null),
            Expr::Neg(e) => match &*e.eval_cow(row) {
                Datum::Int(i) => i.checked_neg().map_or(Datum::Null, Datum::Int),
                Datum::Float(f) => Datum::Float(-f),
                _ => Datum::Null,
            },
            Expr::Not(e) => match &*e.eval_cow(row) {
                Datum::Bool(b) => Datum::Bool(!b),
                _ => Datum::Null,
            },
            Expr::Arith(op, a, b) => arith(*op, &a.eval_cow(row), &b.eval_cow(row)),
            Expr::Cmp(op, a, b) => compare(*op, &a.eval_cow(row), &b.eval_cow(row)),
            Expr::And(items) => {
                let mut unknown = false;
                for item in items {
                    match &*item.eval_cow(row) {
                        Datum::Bool(false) => return Datum::Bool(false),
                        Datum::Bool(true) => {}
                        _ => unknown = true,
                    }
                }
                if unknown { Datum::Null } else { Datum::Bool(true) }
            }
            Expr::Or(items) => {
                let mut unknown = false;
                for item in items {
                    match &*item.eval_cow(row) {
                        Datum::Bool(true) => return Datum::Bool(true),
                        Datum::Bool(false) => {}
                        _ => unknown = true,
                    }
                }
                if unknown { Datum::Null } else { Datum::Bool(false) }
            }
            Expr::Concat(a, b) => {
                let (a, b) = (a.eval_cow(row), b.eval_cow(row));
                if a.is_null() || b.is_null() {
                    return Datum::Null;
                }
                let mut out = String::new();
                push_text(&a, &mut out);
                push_text(&b, &mut out);
                Datum::Str(Arc::from(out))
            }
            Expr::IsNull { expr, negated } => Datum::Bool(expr.eval_cow(row).is_null() != *negated),
            Expr::IsBool { expr, value, negated } => {
                Datum::Bool(matches!(&*expr.eval_cow(row), Datum::Bool(b) if b == value) != *negated)
            }
            Expr::IsDistinctFrom { left, right, negated } => {
                let (a, b) = (left.eval_cow(row), right.eval_cow(row));
                let distinct = match (a.is_null(), b.is_null()) {
                    (true, true) => false,
                    (true, false) | (false, true) => true,
                    (false, false) => a.sql_eq(&b) != Some(true),
                };
                Datum::Bool(distinct != *negated)
            }
            Expr::InList { expr, list, negated } => {
                let value = expr.eval_cow(row);
                if value.is_null() {
                    return Datum::Null;
                }
                let mut unknown = false;
                for item in list {
                    match value.sql_eq(&item.eval_cow(row)) {
                        Some(true) => return Datum::Bool(!negated),
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                if unknown { Datum::Null } else { Datum::Bool(*negated) }
            }
            Expr::Between { expr, low, high, negated } => {
                let value = expr.eval_cow(row);
                let above = value.sql_cmp(&low.eval_cow(row)).map(|o| o != Ordering::Less);
                let below = value.sql_cmp(&high.eval_cow(row)).map(|o| o != Ordering::Greater);
                let within = match (above, below) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                within.map_or(Datum::Null, |w| Datum::Bool(w != *negated))
            }
            Expr::Like { expr, pattern, escape, case_insensitive, negated, compiled } => {
                let value = expr.eval_cow(row);
                let Datum::Str(text) = &*value else { return Datum::Null };
                let matched = match compiled {
                    Some(p) => p.matches(text),
                    None => {
                        let pattern = pattern.eval_cow(row);
                        let Datum::Str(pattern) = &*pattern else { return Datum::Null };
                        match LikePattern::new(pattern, *escape, *case_insensitive) {
                            Ok(p) => p.matches(text),
                            Err(_) => return Datum::Null,
                        }
                    }
                };
                Datum::Bool(matched != *negated)
            }
            Expr::Case { operand, branches, otherwise } => {
                let operand = operand.as_ref().map(|o| o.eval_cow(row));
                for (when, then) in branches {
                    let hit = match &operand {
                        Some(value) => value.sql_eq(&when.eval_cow(row)) == Some(true),
                        None => when.eval_cow(row).is_true(),
                    };
                    if hit {
                        return then.eval(row);
                    }
                }
                otherwise.as_ref().map_or(Datum::Null, |e| e.eval(row))
            }
            Expr::Cast { expr, to } => cast(&expr.eval_cow(row), *to),
            Expr::Get { expr, path } => match &*expr.eval_cow(row) {
                Datum::Json(value) => json_lookup(value, path).map_or(Datum::Null, Datum::from_json),
                _ => Datum::Null,
            },
            Expr::Call { func, args } => call(*func, args, row),
        }
    }

    /// Calls `f` on each direct sub-expression.
    pub fn for_each_child(&self, f: &mut impl FnMut(&Expr)) {
        match self {
            Expr::Literal(_) | Expr::Column(_) => {}
            Expr::Neg(e)
            | Expr::Not(e)
            | Expr::IsNull { expr: e, .. }
            | Expr::IsBool { expr: e, .. }
            | Expr::Cast { expr: e, .. }
            | Expr::Get { expr: e, .. } => f(e),
            Expr::Arith(_, a, b) | Expr::Cmp(_, a, b) | Expr::Concat(a, b) => {
                f(a);
                f(b);
            }
            Expr::IsDistinctFrom { left, right, .. } => {
                f(left);
                f(right);
            }
            Expr::And(items) | Expr::Or(items) | Expr::Call { args: items, .. } => items.iter().for_each(f),
            Expr::InList { expr, list, .. } => {
                f(expr);
                list.iter().for_each(f);
            }
            Expr::Between { expr, low, high, .. } => {
                f(expr);
                f(low);
                f(high);
            }
            Expr::Like { expr, pattern, .. } => {
                f(expr);
                f(pattern);
            }
            Expr::Case { operand, branches, otherwise } => {
                if let Some(o) = operand {
                    f(o);
                }
                for (when, then) in branches {
                    f(when);
                    f(then);
                }
                if let Some(o) = otherwise {
                    f(o);
                }
            }
        }
    }

    /// True if the expression reads no column (its value is known when compiling).
    pub fn is_constant(&self) -> bool {
        let mut constant = !matches!(self, Expr::Column(_));
        if constant {
            self.for_each_child(&mut |child| constant &= child.is_constant());
        }
        constant
    }
}

fn arith(op: ArithOp, a: &Datum, b: &Datum) -> Datum {
    use ArithOp::*;
    match (a, b) {
        (Datum::Int(x), Datum::Int(y)) => {
            let r = match op {
                Add => x.checked_add(*y),
                Sub => x.checked_sub(*y),
                Mul => x.checked_mul(*y),
                Div => x.checked_div(*y),
                Rem => x.checked_rem(*y),
            };
            r.map_or(Datum::Null, Datum::Int)
        }
        (Datum::Time(t), Datum::Int(d)) => match op {
            Add => t.checked_add(*d).map_or(Datum::Null, Datum::Time),
            Sub => t.checked_sub(*d).map_or(Datum::Null, Datum::Time),
            _ => Datum::Null,
        },
        (Datum::Int(d), Datum::Time(t)) if op == Add => t.checked_add(*d).map_or(Datum::Null, Datum::Time),
        (Datum::Time(x), Datum::Time(y)) if op == Sub => x.checked_sub(*y).map_or(Datum::Null, Datum::Int),
        _ => {
            let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) else { return Datum::Null };
            if matches!(op, Div | Rem) && y == 0.0 {
                return Datum::Null;
            }
            let r = match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                Rem => x % y,
            };
            finite(r)
        }
    }
}

fn compare(op: CmpOp, a: &Datum, b: &Datum) -> Datum {
    let result = match op {
        CmpOp::Eq => a.sql_eq(b),
        CmpOp::NotEq => a.sql_eq(b).map(|e| !e),
        CmpOp::Lt => a.sql_cmp(b).map(Ordering::is_lt),
        CmpOp::LtEq => a.sql_cmp(b).map(Ordering::is_le),
        CmpOp::Gt => a.sql_cmp(b).map(Ordering::is_gt),
        CmpOp::GtEq => a.sql_cmp(b).map(Ordering::is_ge),
    };
    result.map_or(Datum::Null, Datum::Bool)
}

fn as_f64(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(i) => Some(*i as f64),
        Datum::Float(f) => Some(*f),
        _ => None,
    }
}

/// Non-finite results (overflow, NaN) are NULL.
fn finite(f: f64) -> Datum {
    if f.is_finite() { Datum::Float(f) } else { Datum::Null }
}

/// Appends the text form of a non-NULL value (`||`, `concat`, casts to text).
fn push_text(d: &Datum, out: &mut String) {
    match d {
        Datum::Str(s) => out.push_str(s),
        Datum::Float(f) => float_text(*f, out),
        Datum::Null => {}
        other => out.push_str(&other.to_key_text()),
    }
}

/// `f64` to `i64` rounding half away from zero; `None` outside the `i64` range or for NaN.
fn round_to_i64(f: f64) -> Option<i64> {
    let r = f.round();
    (-TWO_POW_63..TWO_POW_63).contains(&r).then_some(r as i64)
}

/// `CAST(d AS to)`; impossible conversions are NULL.
pub fn cast(d: &Datum, to: CastType) -> Datum {
    if d.is_null() {
        return Datum::Null;
    }
    match to {
        CastType::Int => match d {
            Datum::Int(i) | Datum::Time(i) => Datum::Int(*i),
            Datum::Float(f) => round_to_i64(*f).map_or(Datum::Null, Datum::Int),
            Datum::Bool(b) => Datum::Int(i64::from(*b)),
            Datum::Str(s) => s.trim().parse::<i64>().map_or(Datum::Null, Datum::Int),
            _ => Datum::Null,
        },
        CastType::Float => match d {
            Datum::Int(i) | Datum::Time(i) => Datum::Float(*i as f64),
            Datum::Float(f) => Datum::Float(*f),
            Datum::Bool(b) => Datum::Float(if *b { 1.0 } else { 0.0 }),
            Datum::Str(s) => parse_float(s.trim()).map_or(Datum::Null, Datum::Float),
            _ => Datum::Null,
        },
        CastType::Text => match d {
            Datum::Str(_) => d.clone(),
            other => {
                let mut out = String::new();
                push_text(other, &mut out);
                Datum::Str(Arc::from(out))
            }
        },
        CastType::Bool => match d {
            Datum::Bool(_) => d.clone(),
            Datum::Int(i) => Datum::Bool(*i != 0),
            Datum::Float(f) if !f.is_nan() => Datum::Bool(*f != 0.0),
            Datum::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "on" | "1" => Datum::Bool(true),
                "false" | "f" | "no" | "n" | "off" | "0" => Datum::Bool(false),
                _ => Datum::Null,
            },
            _ => Datum::Null,
        },
        CastType::Time => match d {
            Datum::Float(f) => round_to_i64(*f).map_or(Datum::Null, Datum::Time),
            other => other.as_time_ms().map_or(Datum::Null, Datum::Time),
        },
        CastType::Json => match d {
            Datum::Json(_) => d.clone(),
            Datum::Str(s) => serde_json::from_str(s).map_or(Datum::Null, |v| Datum::Json(Arc::new(v))),
            other => Datum::Json(Arc::new(other.to_json())),
        },
    }
}

/// Decimal and exponent notation plus Postgres' `NaN`/`Infinity` spellings.
fn parse_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other if other.contains(|c: char| c.is_ascii_digit()) => other.parse().ok(),
        _ => None,
    }
}

fn str_arg(args: &[Expr], i: usize, row: &[Datum]) -> Option<Arc<str>> {
    match args.get(i)?.eval(row) {
        Datum::Str(s) => Some(s),
        _ => None,
    }
}

fn int_arg(args: &[Expr], i: usize, row: &[Datum]) -> Option<i64> {
    match &*args.get(i)?.eval_cow(row) {
        Datum::Int(v) => Some(*v),
        Datum::Float(f) if f.fract() == 0.0 => round_to_i64(*f),
        _ => None,
    }
}

fn num_arg(args: &[Expr], i: usize, row: &[Datum]) -> Option<f64> {
    as_f64(&args.get(i)?.eval_cow(row))
}

fn time_arg(args: &[Expr], i: usize, row: &[Datum]) -> Option<i64> {
    args.get(i)?.eval_cow(row).as_time_ms()
}

fn str_datum(s: String) -> Datum {
    Datum::Str(Arc::from(s))
}

fn call(func: Func, args: &[Expr], row: &[Datum]) -> Datum {
    call_opt(func, args, row).unwrap_or(Datum::Null)
}

fn call_opt(func: Func, args: &[Expr], row: &[Datum]) -> Option<Datum> {
    Some(match func {
        Func::Lower => str_datum(str_arg(args, 0, row)?.to_lowercase()),
        Func::Upper => str_datum(str_arg(args, 0, row)?.to_uppercase()),
        Func::Length => Datum::Int(i64::try_from(str_arg(args, 0, row)?.chars().count()).ok()?),
        Func::Substring => {
            let s = str_arg(args, 0, row)?;
            let start = int_arg(args, 1, row)?;
            // Postgres: characters at positions [start, start + count) intersected with [1, len].
            let end = match args.get(2) {
                Some(_) => {
                    let count = int_arg(args, 2, row)?;
                    if count < 0 {
                        return None;
                    }
                    Some(start.saturating_add(count))
                }
                None => None,
            };
            let skip = usize::try_from(start.saturating_sub(1).max(0)).ok()?;
            let take = match end {
                Some(end) => usize::try_from(end.saturating_sub(start.max(1)).max(0)).ok()?,
                None => usize::MAX,
            };
            str_datum(s.chars().skip(skip).take(take).collect())
        }
        Func::Concat => {
            let mut out = String::new();
            for arg in args {
                push_text(&arg.eval_cow(row), &mut out);
            }
            str_datum(out)
        }
        Func::Trim { leading, trailing } => {
            let s = str_arg(args, 0, row)?;
            let chars = match args.get(1) {
                Some(_) => str_arg(args, 1, row)?,
                None => Arc::from(" "),
            };
            let strip = |c: char| chars.contains(c);
            let mut out: &str = &s;
            if leading {
                out = out.trim_start_matches(strip);
            }
            if trailing {
                out = out.trim_end_matches(strip);
            }
            if out.len() == s.len() { Datum::Str(s.clone()) } else { str_datum(out.to_string()) }
        }
        Func::Replace => {
            let s = str_arg(args, 0, row)?;
            let from = str_arg(args, 1, row)?;
            let to = str_arg(args, 2, row)?;
            if from.is_empty() { Datum::Str(s) } else { str_datum(s.replace(&*from, &to)) }
        }
        Func::StartsWith => Datum::Bool(str_arg(args, 0, row)?.starts_with(&*str_arg(args, 1, row)?)),
        Func::Coalesce => args.iter().map(|a| a.eval(row)).find(|d| !d.is_null()).unwrap_or(Datum::Null),
        Func::NullIf => {
            let a = args.first()?.eval(row);
            if a.sql_eq(&args.get(1)?.eval_cow(row)) == Some(true) { Datum::Null } else { a }
        }
        Func::Abs => match &*args.first()?.eval_cow(row) {
            Datum::Int(i) => Datum::Int(i.checked_abs()?),
            Datum::Float(f) => Datum::Float(f.abs()),
            _ => return None,
        },
        Func::Round => {
            let digits = match args.get(1) {
                Some(_) => int_arg(args, 1, row)?,
                None => 0,
            };
            match &*args.first()?.eval_cow(row) {
                Datum::Int(i) if digits >= 0 => Datum::Int(*i),
                Datum::Int(i) => {
                    let factor = 10i64.checked_pow(u32::try_from(digits.unsigned_abs()).ok()?).unwrap_or(0);
                    if factor == 0 {
                        return Some(Datum::Int(0));
                    }
                    let half = if *i < 0 { -(factor / 2) } else { factor / 2 };
                    Datum::Int(i.checked_add(half)? / factor * factor)
                }
                Datum::Float(f) => Datum::Float(round_float(*f, digits)),
                _ => return None,
            }
        }
        Func::Floor => match &*args.first()?.eval_cow(row) {
            Datum::Int(i) => Datum::Int(*i),
            Datum::Float(f) => Datum::Float(f.floor()),
            _ => return None,
        },
        Func::Ceil => match &*args.first()?.eval_cow(row) {
            Datum::Int(i) => Datum::Int(*i),
            Datum::Float(f) => Datum::Float(f.ceil()),
            _ => return None,
        },
        Func::Sqrt => {
            let x = num_arg(args, 0, row)?;
            if x < 0.0 {
                return None;
            }
            finite(x.sqrt())
        }
        Func::Ln => positive(num_arg(args, 0, row)?).map(f64::ln).map_or(Datum::Null, finite),
        Func::Log10 => positive(num_arg(args, 0, row)?).map(f64::log10).map_or(Datum::Null, finite),
        Func::Power => finite(num_arg(args, 0, row)?.powf(num_arg(args, 1, row)?)),
        Func::Greatest => extreme(args, row, Ordering::Greater)?,
        Func::Least => extreme(args, row, Ordering::Less)?,
        Func::DateTrunc(unit) => Datum::Time(date_trunc(time_arg(args, 0, row)?, unit)?),
        Func::Extract(field) => extract(time_arg(args, 0, row)?, field)?,
        Func::ToTimestamp => match &*args.first()?.eval_cow(row) {
            Datum::Int(s) => Datum::Time(s.checked_mul(1000)?),
            Datum::Float(s) => Datum::Time(round_to_i64(s * 1000.0)?),
            Datum::Time(t) => Datum::Time(*t),
            Datum::Str(s) => Datum::Time(crate::datum::parse_time(s)?),
            _ => return None,
        },
        Func::EpochMs => Datum::Int(time_arg(args, 0, row)?),
    })
}

fn positive(x: f64) -> Option<f64> {
    (x > 0.0).then_some(x)
}

/// Half away from zero at `digits` decimals (negative: tens, hundreds...); values too large to have a fraction
/// at that precision are returned unchanged.
fn round_float(f: f64, digits: i64) -> f64 {
    let digits = digits.clamp(-308, 308) as i32;
    let scale = 10f64.powi(digits);
    let scaled = f * scale;
    if !scaled.is_finite() || scale == 0.0 {
        return f;
    }
    let r = scaled.round() / scale;
    if r.is_finite() { r } else { f }
}

/// `greatest`/`least`: NULLs skipped; NULL if any two values are incomparable.
fn extreme(args: &[Expr], row: &[Datum], want: Ordering) -> Option<Datum> {
    let mut best: Option<Datum> = None;
    for arg in args {
        let v = arg.eval(row);
        if v.is_null() {
            continue;
        }
        best = Some(match best {
            None => v,
            Some(b) => {
                if v.sql_cmp(&b)? == want {
                    v
                } else {
                    b
                }
            }
        });
    }
    Some(best.unwrap_or(Datum::Null))
}

const MS_PER_DAY: i64 = 86_400_000;

fn date_trunc(ms: i64, unit: TimeUnit) -> Option<i64> {
    let floor_to = |step: i64| ms.checked_sub(ms.rem_euclid(step));
    match unit {
        TimeUnit::Millisecond => Some(ms),
        TimeUnit::Second => floor_to(1000),
        TimeUnit::Minute => floor_to(60_000),
        TimeUnit::Hour => floor_to(3_600_000),
        TimeUnit::Day => floor_to(MS_PER_DAY),
        TimeUnit::Week => {
            // 1970-01-05 was a Monday: weeks start at 4 days plus multiples of 7 days.
            let monday_offset = 4 * MS_PER_DAY;
            let shifted = ms.checked_sub(monday_offset)?;
            shifted.checked_sub(shifted.rem_euclid(7 * MS_PER_DAY))?.checked_add(monday_offset)
        }
        TimeUnit::Month | TimeUnit::Quarter | TimeUnit::Year => {
            let t = DateTime::from_timestamp_millis(ms)?;
            let month = match unit {
                TimeUnit::Month => t.month(),
                TimeUnit::Quarter => t.month0() / 3 * 3 + 1,
                _ => 1,
            };
            let start = NaiveDate::from_ymd_opt(t.year(), month, 1)?.and_hms_opt(0, 0, 0)?;
            Some(start.and_utc().timestamp_millis())
        }
    }
}

fn extract(ms: i64, field: TimeField) -> Option<Datum> {
    let t = DateTime::from_timestamp_millis(ms)?;
    let millis = i64::from(t.timestamp_subsec_millis());
    Some(match field {
        TimeField::Epoch => Datum::Float(ms as f64 / 1000.0),
        TimeField::Year => Datum::Int(i64::from(t.year())),
        TimeField::Quarter => Datum::Int(i64::from(t.month0() / 3 + 1)),
        TimeField::Month => Datum::Int(i64::from(t.month())),
        TimeField::Week => Datum::Int(i64::from(t.iso_week().week())),
        TimeField::Day => Datum::Int(i64::from(t.day())),
        TimeField::DayOfWeek => Datum::Int(i64::from(t.weekday().num_days_from_sunday())),
        TimeField::DayOfYear => Datum::Int(i64::from(t.ordinal())),
        TimeField::Hour => Datum::Int(i64::from(t.hour())),
        TimeField::Minute => Datum::Int(i64::from(t.minute())),
        TimeField::Second => Datum::Float((i64::from(t.second()) * 1000 + millis) as f64 / 1000.0),
        TimeField::Millisecond => Datum::Int(i64::from(t.second()) * 1000 + millis),
    })
}

/// A `LIKE` pattern split into tokens once.
#[derive(Debug, Clone, PartialEq)]
pub struct LikePattern {
    tokens: Vec<LikeToken>,
    case_insensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LikeToken {
    /// `%`
    Any,
    /// `_`
    One,
    Char(char),
}

impl LikePattern {
    /// `escape` makes the next character literal (`None`: no escape character). Errors on a trailing escape.
    pub fn new(pattern: &str, escape: Option<char>, case_insensitive: bool) -> Result<Self, String> {
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let token = if Some(c) == escape {
                match chars.next() {
                    Some(next) => LikeToken::Char(next),
                    None => return Err("LIKE pattern must not end with the escape character".to_string()),
                }
            } else if c == '%' {
                if tokens.last() == Some(&LikeToken::Any) {
                    continue;
                }
                LikeToken::Any
            } else if c == '_' {
                LikeToken::One
            } else {
                LikeToken::Char(c)
            };
            tokens.push(token);
        }
        Ok(LikePattern { tokens, case_insensitive })
    }

    /// Greedy match with backtracking to the last `%`: O(len(text) * len(pattern)) at worst, no allocation.
    pub fn matches(&self, text: &str) -> bool {
        let (mut p, mut t) = (0usize, 0usize);
        let mut retry: Option<(usize, usize)> = None;
        loop {
            let step = match self.tokens.get(p) {
                Some(LikeToken::Any) => {
                    retry = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(LikeToken::One) => text[t..].chars().next().map(char::len_utf8),
                Some(LikeToken::Char(want)) => {
                    text[t..].chars().next().filter(|&c| self.char_eq(c, *want)).map(char::len_utf8)
                }
                None if t == text.len() => return true,
                None => None,
            };
            match step {
                Some(len) => {
                    p += 1;
                    t += len;
                }
                None => {
                    // Let the last `%` swallow one more character and retry from there.
                    let Some((rp, rt)) = retry else { return false };
                    let Some(c) = text[rt..].chars().next() else { return false };
                    retry = Some((rp, rt + c.len_utf8()));
                    p = rp;
                    t = rt + c.len_utf8();
                }
            }
        }
    }

    fn char_eq(&self, a: char, b: char) -> bool {
        a == b || (self.case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(d: impl Into<Datum>) -> Expr {
        Expr::Literal(d.into())
    }

    fn null() -> Expr {
        Expr::Literal(Datum::Null)
    }

    fn b(e: Expr) -> Box<Expr> {
        Box::new(e)
    }

    fn f(func: Func, args: Vec<Expr>) -> Datum {
        Expr::Call { func, args }.eval(&[])
    }

    fn s(text: &str) -> Datum {
        Datum::from(text)
    }

    #[test]
    fn arithmetic() {
        let a = |op, x: Datum, y: Datum| Expr::Arith(op, b(Expr::Literal(x)), b(Expr::Literal(y))).eval(&[]);
        use ArithOp::*;
        assert_eq!(a(Add, Datum::Int(2), Datum::Int(3)), Datum::Int(5));
        assert_eq!(a(Div, Datum::Int(7), Datum::Int(2)), Datum::Int(3));
        assert_eq!(a(Div, Datum::Int(-7), Datum::Int(2)), Datum::Int(-3));
        assert_eq!(a(Rem, Datum::Int(-7), Datum::Int(2)), Datum::Int(-1));
        assert_eq!(a(Div, Datum::Int(1), Datum::Int(0)), Datum::Null);
        assert_eq!(a(Rem, Datum::Int(1), Datum::Int(0)), Datum::Null);
        assert_eq!(a(Div, Datum::Int(i64::MIN), Datum::Int(-1)), Datum::Null);
        assert_eq!(a(Add, Datum::Int(i64::MAX), Datum::Int(1)), Datum::Null);
        assert_eq!(a(Mul, Datum::Int(2), Datum::Float(1.5)), Datum::Float(3.0));
        assert_eq!(a(Div, Datum::Float(1.0), Datum::Int(0)), Datum::Null);
        assert_eq!(a(Mul, Datum::Float(1e308), Datum::Float(10.0)), Datum::Null);
        assert_eq!(a(Add, Datum::Time(1000), Datum::Int(500)), Datum::Time(1500));
        assert_eq!(a(Add, Datum::Int(500), Datum::Time(1000)), Datum::Time(1500));
        assert_eq!(a(Sub, Datum::Time(1000), Datum::Int(500)), Datum::Time(500));
        assert_eq!(a(Sub, Datum::Time(1000), Datum::Time(400)), Datum::Int(600));
        assert_eq!(a(Add, Datum::Time(1000), Datum::Time(400)), Datum::Null);
        assert_eq!(a(Add, s("1"), Datum::Int(1)), Datum::Null);
        assert_eq!(a(Add, Datum::Null, Datum::Int(1)), Datum::Null);
        assert_eq!(Expr::Neg(b(lit(i64::MIN))).eval(&[]), Datum::Null);
        assert_eq!(Expr::Neg(b(lit(2.5))).eval(&[]), Datum::Float(-2.5));
    }

    #[test]
    fn three_valued_logic() {
        let t = || lit(true);
        let fl = || lit(false);
        assert_eq!(Expr::And(vec![t(), null()]).eval(&[]), Datum::Null);
        assert_eq!(Expr::And(vec![fl(), null()]).eval(&[]), Datum::Bool(false));
        assert_eq!(Expr::And(vec![null(), fl()]).eval(&[]), Datum::Bool(false));
        assert_eq!(Expr::And(vec![t(), t()]).eval(&[]), Datum::Bool(true));
        assert_eq!(Expr::Or(vec![fl(), null()]).eval(&[]), Datum::Null);
        assert_eq!(Expr::Or(vec![null(), t()]).eval(&[]), Datum::Bool(true));
        assert_eq!(Expr::Or(vec![fl(), fl()]).eval(&[]), Datum::Bool(false));
        assert_eq!(Expr::Not(b(null())).eval(&[]), Datum::Null);
        assert_eq!(Expr::Not(b(lit(5))).eval(&[]), Datum::Null);
        assert_eq!(Expr::Not(b(fl())).eval(&[]), Datum::Bool(true));
        // A non-boolean operand is unknown.
        assert_eq!(Expr::And(vec![t(), lit(1)]).eval(&[]), Datum::Null);
    }

    #[test]
    fn comparisons_and_predicates() {
        let c = |op, x: Expr, y: Expr| Expr::Cmp(op, b(x), b(y)).eval(&[]);
        assert_eq!(c(CmpOp::Lt, lit(1), lit(1.5)), Datum::Bool(true));
        assert_eq!(c(CmpOp::Eq, lit(2), lit(2.0)), Datum::Bool(true));
        assert_eq!(c(CmpOp::NotEq, lit("a"), lit("b")), Datum::Bool(true));
        assert_eq!(c(CmpOp::GtEq, lit("b"), lit("a")), Datum::Bool(true));
        assert_eq!(c(CmpOp::Eq, lit(1), null()), Datum::Null);
        assert_eq!(c(CmpOp::Eq, lit(1), lit("1")), Datum::Null);
        assert_eq!(
            c(CmpOp::Gt, Expr::Literal(Datum::Time(1_795_852_860_000)), lit("2026-11-28T08:00:00Z")),
            Datum::Bool(true)
        );
        let in_list = |x: Expr, list: Vec<Expr>, negated| Expr::InList { expr: b(x), list, negated }.eval(&[]);
        assert_eq!(in_list(lit(2), vec![lit(1), lit(2)], false), Datum::Bool(true));
        assert_eq!(in_list(lit(3), vec![lit(1), lit(2)], false), Datum::Bool(false));
        assert_eq!(in_list(lit(3), vec![lit(1), null()], false), Datum::Null);
        assert_eq!(in_list(lit(1), vec![lit(1), null()], false), Datum::Bool(true));
        assert_eq!(in_list(lit(3), vec![lit(1), null()], true), Datum::Null);
        assert_eq!(in_list(lit(3), vec![lit(1), lit(2)], true), Datum::Bool(true));
        assert_eq!(in_list(null(), vec![lit(1)], true), Datum::Null);
        let between = |x: Expr, lo: Expr, hi: Expr, negated| {
            Expr::Between { expr: b(x), low: b(lo), high: b(hi), negated }.eval(&[])
        };
        assert_eq!(between(lit(5), lit(1), lit(5), false), Datum::Bool(true));
        assert_eq!(between(lit(6), lit(1), lit(5), false), Datum::Bool(false));
        assert_eq!(between(lit(6), lit(1), lit(5), true), Datum::Bool(true));
        assert_eq!(between(lit(6), null(), lit(5), false), Datum::Bool(false));
        assert_eq!(between(lit(3), null(), lit(5), false), Datum::Null);
        assert_eq!(Expr::IsNull { expr: b(null()), negated: false }.eval(&[]), Datum::Bool(true));
        assert_eq!(Expr::IsNull { expr: b(lit(1)), negated: true }.eval(&[]), Datum::Bool(true));
        assert_eq!(Expr::IsBool { expr: b(null()), value: true, negated: true }.eval(&[]), Datum::Bool(true));
        let distinct = |x, y, negated| Expr::IsDistinctFrom { left: b(x), right: b(y), negated }.eval(&[]);
        assert_eq!(distinct(null(), null(), false), Datum::Bool(false));
        assert_eq!(distinct(lit(1), null(), false), Datum::Bool(true));
        assert_eq!(distinct(lit(1), lit(1.0), true), Datum::Bool(true));
    }

    #[test]
    fn like() {
        let m = |text: &str, pattern: &str| LikePattern::new(pattern, Some('\\'), false).unwrap().matches(text);
        assert!(m("hello", "h%o"));
        assert!(m("hello", "%"));
        assert!(m("", "%"));
        assert!(!m("", "_"));
        assert!(m("hello", "_ello"));
        assert!(m("hello", "%l%l%o"));
        assert!(!m("hello", "%l%l%l%"));
        assert!(m("a%b", "a\\%b"));
        assert!(!m("axb", "a\\%b"));
        assert!(m("über", "_ber"));
        assert!(m("aaa", "%%a"));
        assert!(!m("Hello", "h%"));
        assert!(m("mississippi", "%iss%ppi"));
        assert!(LikePattern::new("HÉLLO", None, true).unwrap().matches("héllo"));
        assert!(LikePattern::new("a\\", Some('\\'), false).is_err());
        assert!(LikePattern::new("a\\", None, false).unwrap().matches("a\\"));
        let like = |text: Expr, pattern: &str, negated| Expr::Like {
            expr: b(text),
            pattern: b(lit(pattern)),
            escape: Some('\\'),
            case_insensitive: false,
            negated,
            compiled: None,
        };
        assert_eq!(like(lit("abc"), "a%", false).eval(&[]), Datum::Bool(true));
        assert_eq!(like(lit("abc"), "a%", true).eval(&[]), Datum::Bool(false));
        assert_eq!(like(null(), "a%", false).eval(&[]), Datum::Null);
        assert_eq!(like(lit(5), "5", false).eval(&[]), Datum::Null);
        assert_eq!(like(lit("a\\"), "a\\", false).eval(&[]), Datum::Null);
    }

    #[test]
    fn case_forms() {
        let row = [Datum::Int(2)];
        let searched = Expr::Case {
            operand: None,
            branches: vec![
                (Expr::Cmp(CmpOp::Lt, b(Expr::Column(0)), b(lit(1))), lit("small")),
                (null(), lit("never")),
                (Expr::Cmp(CmpOp::Lt, b(Expr::Column(0)), b(lit(3))), lit("medium")),
            ],
            otherwise: Some(b(lit("large"))),
        };
        assert_eq!(searched.eval(&row), s("medium"));
        assert_eq!(searched.eval(&[Datum::Int(9)]), s("large"));
        assert_eq!(searched.eval(&[Datum::Null]), s("large"));
        let simple = Expr::Case {
            operand: Some(b(Expr::Column(0))),
            branches: vec![(lit(1), lit("one")), (lit(2.0), lit("two"))],
            otherwise: None,
        };
        assert_eq!(simple.eval(&row), s("two"));
        assert_eq!(simple.eval(&[Datum::Int(3)]), Datum::Null);
        assert_eq!(simple.eval(&[Datum::Null]), Datum::Null);
    }

    #[test]
    fn casts() {
        assert_eq!(cast(&s(" 42 "), CastType::Int), Datum::Int(42));
        assert_eq!(cast(&s("4.2"), CastType::Int), Datum::Null);
        assert_eq!(cast(&Datum::Float(2.5), CastType::Int), Datum::Int(3));
        assert_eq!(cast(&Datum::Float(-2.5), CastType::Int), Datum::Int(-3));
        assert_eq!(cast(&Datum::Float(1e30), CastType::Int), Datum::Null);
        assert_eq!(cast(&Datum::Float(f64::NAN), CastType::Int), Datum::Null);
        assert_eq!(cast(&Datum::Bool(true), CastType::Int), Datum::Int(1));
        assert_eq!(cast(&s("1e3"), CastType::Float), Datum::Float(1000.0));
        assert_eq!(cast(&s("abc"), CastType::Float), Datum::Null);
        assert_eq!(cast(&Datum::Int(7), CastType::Text), s("7"));
        assert_eq!(cast(&Datum::Float(1.5), CastType::Text), s("1.5"));
        assert_eq!(cast(&Datum::Float(f64::INFINITY), CastType::Text), s("Infinity"));
        assert_eq!(cast(&Datum::Time(0), CastType::Text), s("1970-01-01T00:00:00.000Z"));
        assert_eq!(cast(&s("yes"), CastType::Bool), Datum::Bool(true));
        assert_eq!(cast(&s("maybe"), CastType::Bool), Datum::Null);
        assert_eq!(cast(&Datum::Int(0), CastType::Bool), Datum::Bool(false));
        assert_eq!(cast(&s("1970-01-01T00:00:01Z"), CastType::Time), Datum::Time(1000));
        assert_eq!(cast(&Datum::Int(5), CastType::Time), Datum::Time(5));
        assert_eq!(cast(&s("soon"), CastType::Time), Datum::Null);
        assert_eq!(cast(&s(r#"{"a":1}"#), CastType::Json).to_json(), serde_json::json!({"a": 1}));
        assert_eq!(cast(&Datum::Null, CastType::Text), Datum::Null);
    }

    #[test]
    fn string_functions() {
        assert_eq!(f(Func::Lower, vec![lit("AbC")]), s("abc"));
        assert_eq!(f(Func::Upper, vec![lit("straße")]), s("STRASSE"));
        assert_eq!(f(Func::Lower, vec![lit(1)]), Datum::Null);
        assert_eq!(f(Func::Length, vec![lit("héllo")]), Datum::Int(5));
        let sub = |args: Vec<Expr>| f(Func::Substring, args);
        assert_eq!(sub(vec![lit("hello"), lit(2), lit(3)]), s("ell"));
        assert_eq!(sub(vec![lit("hello"), lit(2)]), s("ello"));
        assert_eq!(sub(vec![lit("hello"), lit(0), lit(3)]), s("he"));
        assert_eq!(sub(vec![lit("hello"), lit(-5), lit(3)]), s(""));
        assert_eq!(sub(vec![lit("hello"), lit(4), lit(100)]), s("lo"));
        assert_eq!(sub(vec![lit("hello"), lit(1), lit(-1)]), Datum::Null);
        assert_eq!(sub(vec![lit("hello"), lit(i64::MIN), lit(i64::MAX)]), s(""));
        assert_eq!(sub(vec![lit("hello"), lit(i64::MAX), lit(i64::MAX)]), s(""));
        assert_eq!(f(Func::Concat, vec![lit("a"), null(), lit(1), lit(true)]), s("a1true"));
        assert_eq!(Expr::Concat(b(lit("a")), b(lit(1))).eval(&[]), s("a1"));
        assert_eq!(Expr::Concat(b(lit("a")), b(null())).eval(&[]), Datum::Null);
        let trim = |leading, trailing, args| f(Func::Trim { leading, trailing }, args);
        assert_eq!(trim(true, true, vec![lit("  a b  ")]), s("a b"));
        assert_eq!(trim(true, false, vec![lit("  a  ")]), s("a  "));
        assert_eq!(trim(false, true, vec![lit("xxaxx"), lit("x")]), s("xxa"));
        assert_eq!(f(Func::Replace, vec![lit("a-b-c"), lit("-"), lit("+")]), s("a+b+c"));
        assert_eq!(f(Func::Replace, vec![lit("abc"), lit(""), lit("+")]), s("abc"));
        assert_eq!(f(Func::StartsWith, vec![lit("abc"), lit("ab")]), Datum::Bool(true));
        assert_eq!(f(Func::Coalesce, vec![null(), lit(2), lit(3)]), Datum::Int(2));
        assert_eq!(f(Func::Coalesce, vec![null()]), Datum::Null);
        assert_eq!(f(Func::NullIf, vec![lit(1), lit(1.0)]), Datum::Null);
        assert_eq!(f(Func::NullIf, vec![lit(1), lit(2)]), Datum::Int(1));
    }

    #[test]
    fn math_functions() {
        assert_eq!(f(Func::Abs, vec![lit(-3)]), Datum::Int(3));
        assert_eq!(f(Func::Abs, vec![lit(i64::MIN)]), Datum::Null);
        assert_eq!(f(Func::Round, vec![lit(2.5)]), Datum::Float(3.0));
        assert_eq!(f(Func::Round, vec![lit(-2.5)]), Datum::Float(-3.0));
        assert_eq!(f(Func::Round, vec![lit(1.2345), lit(2)]), Datum::Float(1.23));
        assert_eq!(f(Func::Round, vec![lit(1234.5), lit(-2)]), Datum::Float(1200.0));
        assert_eq!(f(Func::Round, vec![lit(1250), lit(-2)]), Datum::Int(1300));
        assert_eq!(f(Func::Round, vec![lit(-1250), lit(-2)]), Datum::Int(-1300));
        assert_eq!(f(Func::Round, vec![lit(7), lit(2)]), Datum::Int(7));
        assert_eq!(f(Func::Round, vec![lit(7), lit(-30)]), Datum::Int(0));
        assert_eq!(f(Func::Round, vec![lit(1e300), lit(10)]), Datum::Float(1e300));
        assert_eq!(f(Func::Floor, vec![lit(-1.5)]), Datum::Float(-2.0));
        assert_eq!(f(Func::Ceil, vec![lit(1.2)]), Datum::Float(2.0));
        assert_eq!(f(Func::Ceil, vec![lit(4)]), Datum::Int(4));
        assert_eq!(f(Func::Sqrt, vec![lit(9)]), Datum::Float(3.0));
        assert_eq!(f(Func::Sqrt, vec![lit(-1)]), Datum::Null);
        assert_eq!(f(Func::Ln, vec![lit(0)]), Datum::Null);
        assert_eq!(f(Func::Log10, vec![lit(1000)]), Datum::Float(3.0));
        assert_eq!(f(Func::Power, vec![lit(2), lit(10)]), Datum::Float(1024.0));
        assert_eq!(f(Func::Power, vec![lit(10), lit(400)]), Datum::Null);
        assert_eq!(f(Func::Greatest, vec![lit(1), null(), lit(3.5), lit(2)]), Datum::Float(3.5));
        assert_eq!(f(Func::Least, vec![lit("b"), lit("a")]), s("a"));
        assert_eq!(f(Func::Least, vec![lit(1), lit("a")]), Datum::Null);
        assert_eq!(f(Func::Greatest, vec![null()]), Datum::Null);
    }

    #[test]
    fn time_functions() {
        // 2026-11-28T08:01:02.345Z, a Saturday.
        let t = 1_795_852_862_345;
        let at = |func| f(func, vec![Expr::Literal(Datum::Time(t))]);
        let trunc = |unit| at(Func::DateTrunc(unit)).as_time_ms().and_then(crate::datum::format_time).unwrap();
        assert_eq!(trunc(TimeUnit::Second), "2026-11-28T08:01:02.000Z");
        assert_eq!(trunc(TimeUnit::Minute), "2026-11-28T08:01:00.000Z");
        assert_eq!(trunc(TimeUnit::Hour), "2026-11-28T08:00:00.000Z");
        assert_eq!(trunc(TimeUnit::Day), "2026-11-28T00:00:00.000Z");
        assert_eq!(trunc(TimeUnit::Week), "2026-11-23T00:00:00.000Z");
        assert_eq!(trunc(TimeUnit::Month), "2026-11-01T00:00:00.000Z");
        assert_eq!(trunc(TimeUnit::Quarter), "2026-10-01T00:00:00.000Z");
        assert_eq!(trunc(TimeUnit::Year), "2026-01-01T00:00:00.000Z");
        assert_eq!(f(Func::DateTrunc(TimeUnit::Minute), vec![lit(-1)]), Datum::Time(-60_000));
        assert_eq!(f(Func::DateTrunc(TimeUnit::Week), vec![lit(0)]), Datum::Time(-3 * MS_PER_DAY));
        assert_eq!(f(Func::DateTrunc(TimeUnit::Minute), vec![lit("2026-11-28T08:01:02Z")]), Datum::Time(t - 2345));
        assert_eq!(f(Func::DateTrunc(TimeUnit::Second), vec![lit(i64::MIN)]), Datum::Null);
        assert_eq!(at(Func::Extract(TimeField::Epoch)), Datum::Float(1_795_852_862.345));
        assert_eq!(at(Func::Extract(TimeField::Year)), Datum::Int(2026));
        assert_eq!(at(Func::Extract(TimeField::Quarter)), Datum::Int(4));
        assert_eq!(at(Func::Extract(TimeField::Month)), Datum::Int(11));
        assert_eq!(at(Func::Extract(TimeField::Day)), Datum::Int(28));
        assert_eq!(at(Func::Extract(TimeField::DayOfWeek)), Datum::Int(6));
        assert_eq!(at(Func::Extract(TimeField::DayOfYear)), Datum::Int(332));
        assert_eq!(at(Func::Extract(TimeField::Week)), Datum::Int(48));
        assert_eq!(at(Func::Extract(TimeField::Hour)), Datum::Int(8));
        assert_eq!(at(Func::Extract(TimeField::Minute)), Datum::Int(1));
        assert_eq!(at(Func::Extract(TimeField::Second)), Datum::Float(2.345));
        assert_eq!(at(Func::Extract(TimeField::Millisecond)), Datum::Int(2345));
        assert_eq!(f(Func::Extract(TimeField::Year), vec![lit("nope")]), Datum::Null);
        assert_eq!(f(Func::ToTimestamp, vec![lit(1)]), Datum::Time(1000));
        assert_eq!(f(Func::ToTimestamp, vec![lit(1.5)]), Datum::Time(1500));
        assert_eq!(f(Func::ToTimestamp, vec![lit("1970-01-01T00:00:02Z")]), Datum::Time(2000));
        assert_eq!(f(Func::ToTimestamp, vec![lit(i64::MAX)]), Datum::Null);
        assert_eq!(f(Func::EpochMs, vec![Expr::Literal(Datum::Time(t))]), Datum::Int(t));
    }

    #[test]
    fn json_get_and_bad_arity() {
        let doc = Datum::from_json(&serde_json::json!({"a": {"b": [10, 20]}}));
        let get = Expr::Get { expr: b(Expr::Column(0)), path: vec!["a".into(), "b".into(), "1".into()] };
        assert_eq!(get.eval(std::slice::from_ref(&doc)), Datum::Int(20));
        assert_eq!(get.eval(&[Datum::Int(1)]), Datum::Null);
        assert_eq!(Expr::Column(3).eval(&[]), Datum::Null);
        assert_eq!(f(Func::Substring, vec![]), Datum::Null);
        assert_eq!(f(Func::Power, vec![lit(1)]), Datum::Null);
    }

    #[test]
    fn constants() {
        assert!(Expr::Arith(ArithOp::Add, b(lit(1)), b(lit(2))).is_constant());
        assert!(!Expr::Arith(ArithOp::Add, b(lit(1)), b(Expr::Column(0))).is_constant());
        assert!(!Expr::Call { func: Func::Coalesce, args: vec![lit(1), Expr::Column(0)] }.is_constant());
    }
}
