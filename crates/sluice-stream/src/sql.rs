//! The SQL front end: [`parse_job`] turns `CREATE JOB name [WITH (...)] AS [INSERT INTO topic] SELECT ...` into a
//! [`JobPlan`], or a [`SqlError`] with the line and column of the problem.
//!
//! sqlparser (generic dialect) parses the query; it has no `CREATE JOB`, so the statement is tokenized once, the
//! prefix read here, and the remaining tokens (with their original positions) handed to sqlparser's parser.
//! Semantic errors point at the offending expression through sqlparser's spans.
//!
//! Limits keep compiling and evaluating bounded on any input: at most [`MAX_TOKENS`] tokens, expressions at most
//! [`MAX_DEPTH`] deep (`AND`/`OR` chains are flattened and do not count), sqlparser's own recursion limit for
//! parentheses. sqlparser's recursive descent needs more stack than a small thread has in debug builds, so
//! [`parse_job`] runs on a thread of its own with a 64 MiB stack (address space; pages are committed on use).
//!
//! Accepted: one `FROM` topic (quoted or dotted names for `.`/`-`: `"http-requests"`, `logs.http`) with an
//! optional alias; `WHERE`; `GROUP BY` exactly one of `TUMBLE(t, size)`, `HOP(t, slide, size)` (Flink's order),
//! `SESSION(t, gap)` plus key expressions (or SELECT aliases, or 1-based SELECT positions); `HAVING`. Refused
//! with a positioned error: joins, subqueries, set operations, `ORDER BY`, `LIMIT`, `DISTINCT`, window functions
//! (`OVER`), CTEs. Without `GROUP BY` (and without aggregates) the job is stateless: one output per event.
//!
//! Names: any identifier is a field of the event value (case-sensitive, as JSON); `a.b`, `a['b']`, `a->'b'` and
//! `a->>'b'` are nested fields (both arrows give the value itself, not text). A first segment equal to the FROM
//! alias (or, without alias, the topic's last name part) is a qualifier and dropped. In a `GROUP BY` an alias of
//! the SELECT list wins over a field of the same name (there is no schema to tell them apart).

use sqlparser::ast::{
    self, AccessExpr, BinaryOperator, CeilFloorKind, DataType, DateTimeField, DuplicateTreatment, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, JsonPathElem, ObjectName, ObjectNamePart, Query, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Spanned, Subscript, TableFactor, TrimWhereField, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::agg::{AggFunc, AggregateCall};
use crate::datum::Datum;
use crate::expr::{ArithOp, CastType, CmpOp, Expr, Func, LikePattern, TimeField, TimeUnit, cast};
use crate::plan::{Column, JobOptions, JobPlan, PlanBody, Projection, StatelessPlan, WindowedPlan};
use crate::window::WindowSpec;

/// A job definition error at a 1-based line and column of the SQL text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line}, column {column}")]
pub struct SqlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
}

/// Tokens a job statement may have: bounds the depth of left-nested expressions (`a + b + c ...`), which
/// sqlparser builds without a recursion limit.
pub const MAX_TOKENS: usize = 10_000;
/// Nesting depth of a compiled expression: bounds the recursion of evaluation on the runner's threads.
pub const MAX_DEPTH: usize = 128;
/// The stack of the parsing thread.
const PARSE_STACK_BYTES: usize = 64 << 20;

const VALID_OPTIONS: &str = "allowed_lateness, buffer_timeout, hot_retention, idle_timeout, late_topic, \
                             out_of_orderness, output_topic, parallelism, start";
const WINDOW_EXAMPLE: &str = "GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE)";

/// Parses and compiles one `CREATE JOB` statement. Never panics; every error has a position. Runs on a
/// short-lived thread with a large stack (see the module docs); falls back to the caller's thread if none can be
/// started.
pub fn parse_job(sql: &str) -> Result<JobPlan, SqlError> {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("sluice-sql".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || compile_job(sql));
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(SqlError { message: "internal error while compiling the job".into(), line: 1, column: 1 })
            }),
            // No thread (resource limits): parse here, with the caller's stack.
            Err(_) => compile_job(sql),
        }
    })
}

static EOF: Token = Token::EOF;

fn error_at(loc: Location, message: impl Into<String>) -> SqlError {
    SqlError { message: message.into(), line: loc.line.max(1), column: loc.column.max(1) }
}

fn describe(token: &Token) -> String {
    match token {
        Token::EOF => "end of input".to_string(),
        other => format!("'{other}'"),
    }
}

fn compile_job(sql: &str) -> Result<JobPlan, SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| error_at(e.location, lowercase_first(&e.message)))?;
    let tokens: Vec<TokenWithSpan> = tokens.into_iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    if let Some(extra) = tokens.get(MAX_TOKENS) {
        return Err(error_at(
            extra.span.start,
            format!("job statement is too long: more than {MAX_TOKENS} tokens (the limit)"),
        ));
    }
    let end = tokens.last().map_or(Location::new(1, 1), |t| t.span.end);
    let mut prefix = Prefix { tokens: &tokens, pos: 0, end };
    let header = prefix.parse()?;
    let rest = &tokens[prefix.pos..];

    let mut parser = Parser::new(&dialect).with_tokens_with_locations(rest.to_vec());
    let parsed = parse_body(&mut parser);
    let (target, query) = parsed.map_err(|e| parser_error(e, &parser, end))?;
    while parser.consume_token(&Token::SemiColon) {}
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(error_at(
            next.span.start,
            format!("unexpected {} after the query: a job is one statement", describe(&next.token)),
        ));
    }

    let mut compiler = Compiler {
        tokens: rest,
        columns: Vec::new(),
        qualifier: None,
        keys: Vec::new(),
        aggregates: Vec::new(),
        fallback: rest.first().map_or(end, |t| t.span.start),
    };
    compiler.job(header, target, &query)
}

/// The `INSERT INTO` topic (and where it is written), and the query.
type Body = (Option<(String, Span)>, Box<Query>);

/// `[INSERT INTO topic] query`.
fn parse_body(parser: &mut Parser) -> Result<Body, ParserError> {
    let mut target = None;
    if parser.parse_keyword(Keyword::INSERT) {
        parser.expect_keyword_is(Keyword::INTO)?;
        let name = parser.parse_object_name(false)?;
        let span = name.span();
        if parser.peek_token_ref().token == Token::LParen {
            let at = parser.peek_token_ref().span.start;
            return Err(ParserError::ParserError(format!(
                "column lists in INSERT INTO are not supported: name the output columns with AS in the SELECT{at}"
            )));
        }
        target = Some((object_name(&name).unwrap_or_default(), span));
    }
    Ok((target, parser.parse_query()?))
}

fn parser_error(e: ParserError, parser: &Parser, end: Location) -> SqlError {
    let here = parser.peek_token_ref().span.start;
    let here = if here.line == 0 { end } else { here };
    let message = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "expression nests too deeply".to_string(),
    };
    // sqlparser appends " at Line: L, Column: C"; take the position from there.
    if let Some(at) = message.rfind(" at Line: ") {
        let mut numbers = message[at + 10..].split(", Column: ").map(|n| n.trim().parse::<u64>());
        if let (Some(Ok(line)), Some(Ok(column))) = (numbers.next(), numbers.next()) {
            return error_at(
                Location::new(line, column),
                lowercase_first(&message[..at]).replace("found: EOF", "found: end of input"),
            );
        }
    }
    error_at(here, lowercase_first(&message).replace("found: EOF", "found: end of input"))
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The statement prefix: name and options.
struct Header {
    name: String,
    options: JobOptions,
    /// `WITH (output_topic = ...)` and where it was given.
    output_topic: Option<(String, Location)>,
}

enum OptionValue {
    Text(String),
    Number(String),
    Bool(bool),
}

impl OptionValue {
    fn show(&self) -> String {
        match self {
            OptionValue::Text(t) => format!("'{t}'"),
            OptionValue::Number(n) => n.clone(),
            OptionValue::Bool(b) => b.to_string(),
        }
    }
}

/// Reads `CREATE JOB <name> [WITH (<option> = <literal>, ...)] AS` from the token list.
struct Prefix<'t> {
    tokens: &'t [TokenWithSpan],
    pos: usize,
    end: Location,
}

impl Prefix<'_> {
    const SYNTAX: &'static str = "CREATE JOB <name> [WITH (<option> = <value>, ...)] AS SELECT ...";

    fn peek(&self) -> (&Token, Location) {
        match self.tokens.get(self.pos) {
            Some(t) => (&t.token, t.span.start),
            None => (&EOF, self.end),
        }
    }

    fn next(&mut self) -> (&Token, Location) {
        let pos = self.pos;
        self.pos += 1;
        match self.tokens.get(pos) {
            Some(t) => (&t.token, t.span.start),
            None => (&EOF, self.end),
        }
    }

    fn expected(&self, what: &str) -> SqlError {
        let (token, at) = self.peek();
        error_at(at, format!("expected {what}, found {}", describe(token)))
    }

    fn is_word(&self, keyword: Keyword, text: &str) -> bool {
        matches!(self.peek().0, Token::Word(w) if w.quote_style.is_none()
            && (w.keyword == keyword || w.value.eq_ignore_ascii_case(text)))
    }

    fn parse(&mut self) -> Result<Header, SqlError> {
        if !self.is_word(Keyword::CREATE, "create") {
            return Err(self.expected(&format!("CREATE JOB (a job is {})", Self::SYNTAX)));
        }
        self.pos += 1;
        if !self.is_word(Keyword::NoKeyword, "job") {
            return Err(self.expected(&format!("JOB after CREATE (a job is {})", Self::SYNTAX)));
        }
        self.pos += 1;
        let (token, at) = self.peek();
        let name = match token {
            Token::Word(w) if w.quote_style.is_some() || w.keyword != Keyword::AS => w.value.clone(),
            _ => return Err(self.expected("a job name")),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty() || name.len() > 200 || !name.chars().all(valid) {
            return Err(error_at(
                at,
                "job name must be 1 to 200 letters, digits, '_', '-' or '.' (it names the job's topics)",
            ));
        }
        self.pos += 1;
        let mut options = JobOptions::default();
        let mut output_topic = None;
        if self.is_word(Keyword::WITH, "with") {
            self.pos += 1;
            output_topic = self.options(&mut options)?;
        }
        if options.late_topic.is_none() {
            options.late_topic = Some(format!("{name}.late"));
        }
        if !self.is_word(Keyword::AS, "as") {
            return Err(self.expected("AS before the query"));
        }
        self.pos += 1;
        if self.pos >= self.tokens.len() {
            return Err(self.expected("SELECT or INSERT INTO after AS"));
        }
        Ok(Header { name, options, output_topic })
    }

    fn options(&mut self, options: &mut JobOptions) -> Result<Option<(String, Location)>, SqlError> {
        if self.peek().0 != &Token::LParen {
            return Err(self.expected("'(' after WITH"));
        }
        self.pos += 1;
        let mut seen: Vec<String> = Vec::new();
        let mut output_topic = None;
        loop {
            if self.peek().0 == &Token::RParen && seen.is_empty() {
                self.pos += 1;
                return Ok(output_topic);
            }
            let (token, at) = self.peek();
            let name = match token {
                Token::Word(w) => w.value.to_ascii_lowercase(),
                _ => return Err(self.expected("an option name")),
            };
            self.pos += 1;
            if seen.contains(&name) {
                return Err(error_at(at, format!("option {name} is given twice")));
            }
            if self.peek().0 != &Token::Eq {
                return Err(self.expected(&format!("'=' after option {name}")));
            }
            self.pos += 1;
            let value = self.option_value(&name)?;
            if let Some(topic) = apply_option(options, &name, &value).map_err(|m| error_at(at, m))? {
                output_topic = Some((topic, at));
            }
            seen.push(name);
            match self.next() {
                (Token::Comma, _) => {}
                (Token::RParen, _) => return Ok(output_topic),
                (token, at) => {
                    return Err(error_at(
                        at,
                        format!("expected ',' or ')' in WITH options, found {}", describe(token)),
                    ));
                }
            }
        }
    }

    fn option_value(&mut self, name: &str) -> Result<OptionValue, SqlError> {
        let negative = self.peek().0 == &Token::Minus;
        if negative {
            self.pos += 1;
        }
        let value = match self.peek().0 {
            Token::Number(n, _) if negative => OptionValue::Number(format!("-{n}")),
            Token::Number(n, _) => OptionValue::Number(n.clone()),
            Token::SingleQuotedString(s) if !negative => OptionValue::Text(s.clone()),
            Token::Word(w) if !negative && w.quote_style.is_none() && w.keyword == Keyword::TRUE => {
                OptionValue::Bool(true)
            }
            Token::Word(w) if !negative && w.quote_style.is_none() && w.keyword == Keyword::FALSE => {
                OptionValue::Bool(false)
            }
            Token::Word(w) if !negative => OptionValue::Text(w.value.clone()),
            _ => return Err(self.expected(&format!("a value for option {name}"))),
        };
        self.pos += 1;
        Ok(value)
    }
}

/// Sets one option; returns the output topic for `output_topic` (resolved against `INSERT INTO` later).
fn apply_option(options: &mut JobOptions, name: &str, value: &OptionValue) -> Result<Option<String>, String> {
    match name {
        "out_of_orderness" => options.out_of_orderness_ms = duration_option(name, value)?,
        "allowed_lateness" => options.allowed_lateness_ms = duration_option(name, value)?,
        "buffer_timeout" => options.buffer_timeout_ms = duration_option(name, value)?,
        "hot_retention" => options.hot_retention_ms = duration_option(name, value)?,
        "idle_timeout" => {
            let off = match value {
                OptionValue::Text(t) => ["off", "none", "disabled"].contains(&t.to_ascii_lowercase().as_str()),
                OptionValue::Bool(b) => !b,
                OptionValue::Number(_) => false,
            };
            options.idle_timeout_ms = if off {
                None
            } else {
                let ms = duration_option(name, value)?;
                (ms > 0).then_some(ms)
            };
        }
        "parallelism" => {
            let n = match value {
                OptionValue::Number(n) | OptionValue::Text(n) => n.parse::<usize>().ok(),
                OptionValue::Bool(_) => None,
            };
            match n {
                Some(n @ 1..=4096) => options.parallelism = Some(n),
                _ => return Err(format!("option parallelism must be an integer from 1 to 4096, got {}", value.show())),
            }
        }
        "late_topic" | "output_topic" => {
            let topic = match value {
                OptionValue::Text(t) if !t.is_empty() => t.clone(),
                _ => return Err(format!("option {name} must be a topic name like 'jobs.late', got {}", value.show())),
            };
            if name == "output_topic" {
                return Ok(Some(topic));
            }
            options.late_topic = Some(topic);
        }
        "start" => {
            options.start_from_latest = match value {
                OptionValue::Text(t) if t.eq_ignore_ascii_case("earliest") => false,
                OptionValue::Text(t) if t.eq_ignore_ascii_case("latest") => true,
                _ => return Err(format!("option start must be 'earliest' or 'latest', got {}", value.show())),
            }
        }
        _ => return Err(format!("unknown option {name}; valid options: {VALID_OPTIONS}")),
    }
    Ok(None)
}

fn duration_option(name: &str, value: &OptionValue) -> Result<i64, String> {
    let bad = || {
        format!("option {name} must be a duration like '5s' or '100ms' or integer milliseconds, got {}", value.show())
    };
    let ms = match value {
        OptionValue::Number(n) => n.parse::<i64>().map_err(|_| bad())?,
        OptionValue::Text(t) => match t.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => match humantime::parse_duration(t.trim()) {
                Ok(d) => i64::try_from(d.as_millis()).map_err(|_| bad())?,
                Err(_) => interval_text_ms(t).ok_or_else(bad)?,
            },
        },
        OptionValue::Bool(_) => return Err(bad()),
    };
    if ms < 0 {
        return Err(format!("option {name} must be >= 0, got {}", value.show()));
    }
    Ok(ms)
}

/// Milliseconds of one interval unit; `None` for unknown units, `Some(Err)` for months and years.
fn unit_ms(unit: &str) -> Option<Result<f64, String>> {
    Some(Ok(match unit.to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "w" | "week" | "weeks" => 604_800_000.0,
        "mon" | "mons" | "month" | "months" | "y" | "year" | "years" => {
            return Some(Err("intervals of months or years have no fixed length; use days".to_string()));
        }
        _ => return None,
    }))
}

fn ms_of(total: f64) -> Option<i64> {
    let r = total.round();
    (r.is_finite() && r.abs() < 9.2e18).then_some(r as i64)
}

/// `'1 minute'`, `'500 milliseconds'`, `'1h 30m'`, `'1.5s'`; a bare number is seconds (as Postgres).
fn interval_text_ms(text: &str) -> Option<i64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
            .map_or(rest.len(), |(i, _)| i);
        let amount: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = if unit.is_empty() { 1_000.0 } else { unit_ms(unit)?.ok()? };
        total += amount * scale;
        rest = rest[unit_len..].trim_start_matches(|c: char| c.is_whitespace() || c == ',');
    }
    ms_of(total)
}

/// Joins an object name's parts with `.`; `None` if a part is not an identifier.
fn object_name(name: &ObjectName) -> Option<String> {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(id) => parts.push(id.value.as_str()),
            ObjectNamePart::Function(_) => return None,
        }
    }
    Some(parts.join("."))
}

/// Where an aggregate call was found outside a result row, for the message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clause {
    Where,
    GroupBy,
    WindowArg,
    AggregateArg,
    /// A job without GROUP BY.
    Stateless,
    /// Trying whether a result expression is a group key: errors are never shown.
    Probe,
}

#[derive(Clone, Copy)]
enum Scope<'q> {
    /// Over input rows (`JobPlan::columns`).
    Input(Clause),
    /// Over result rows `[window_start, window_end, keys.., aggregates..]`; `aliases` (HAVING only) are SELECT
    /// aliases usable by name.
    Result { aliases: Option<&'q [(String, &'q ast::Expr)]> },
}

struct Compiler<'t> {
    /// The statement's tokens after `AS`, to locate clause keywords.
    tokens: &'t [TokenWithSpan],
    columns: Vec<Column>,
    /// The FROM alias or topic name, dropped from the front of column paths.
    qualifier: Option<String>,
    /// GROUP BY keys over input rows.
    keys: Vec<Expr>,
    aggregates: Vec<AggregateCall>,
    /// Position for nodes without a span.
    fallback: Location,
}

type Result<T, E = SqlError> = std::result::Result<T, E>;

impl<'t> Compiler<'t> {
    fn err(&self, span: Span, message: impl Into<String>) -> SqlError {
        let loc = if span.start.line == 0 { self.fallback } else { span.start };
        error_at(loc, message)
    }

    /// The first top-level (outside parentheses) occurrence of `keyword`.
    fn keyword_span(&self, keyword: Keyword) -> Option<Span> {
        let mut depth = 0i64;
        for t in self.tokens {
            match &t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::Word(w) if depth == 0 && w.quote_style.is_none() && w.keyword == keyword => return Some(t.span),
                _ => {}
            }
        }
        None
    }

    fn err_at_keyword(&self, keyword: Keyword, otherwise: Span, message: impl Into<String>) -> SqlError {
        self.err(self.keyword_span(keyword).unwrap_or(otherwise), message)
    }

    fn job(&mut self, header: Header, target: Option<(String, Span)>, query: &Query) -> Result<JobPlan> {
        let select = self.check_query(query)?;
        self.fallback = select.select_token.0.span.start;
        let source = self.source(select)?;
        let filter = match &select.selection {
            Some(e) => Some(self.expr(e, Scope::Input(Clause::Where), 0)?),
            None => None,
        };
        let group_by = match &select.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(self.err_at_keyword(
                        Keyword::GROUP,
                        select.group_by.span(),
                        "GROUP BY modifiers (ROLLUP, CUBE, TOTALS) are not supported",
                    ));
                }
                exprs.as_slice()
            }
            GroupByExpr::All(_) => {
                return Err(self.err_at_keyword(
                    Keyword::GROUP,
                    select.group_by.span(),
                    "GROUP BY ALL is not supported: list the window and the keys",
                ));
            }
        };
        if let Some((topic, span)) = &target
            && topic.is_empty()
        {
            return Err(self.err(*span, "INSERT INTO needs a topic name"));
        }
        if let (Some(_), Some((_, at))) = (&target, &header.output_topic) {
            return Err(error_at(*at, "option output_topic conflicts with INSERT INTO: give the output topic once"));
        }
        if let Some((topic, span)) = &target
            && *topic == source
        {
            return Err(self.err(*span, "INSERT INTO the source topic would feed the job its own output"));
        }
        let chosen_topic = target.map(|(t, _)| t).or(header.output_topic.map(|(t, _)| t));
        let body = if group_by.is_empty() {
            if let Some(having) = &select.having {
                return Err(self.err_at_keyword(
                    Keyword::HAVING,
                    having.span(),
                    format!("HAVING needs GROUP BY with a window, e.g. {WINDOW_EXAMPLE}"),
                ));
            }
            let output_topic = chosen_topic.unwrap_or_else(|| format!("{}.out", header.name));
            PlanBody::Stateless(self.stateless(select, output_topic)?)
        } else {
            let output_topic = chosen_topic.unwrap_or_else(|| format!("{}.results", header.name));
            PlanBody::Windowed(self.windowed(select, group_by, output_topic)?)
        };
        Ok(JobPlan {
            name: header.name,
            source,
            options: header.options,
            columns: std::mem::take(&mut self.columns),
            filter,
            body,
        })
    }

    /// Refuses everything but one plain SELECT.
    fn check_query<'q>(&self, query: &'q Query) -> Result<&'q ast::Select> {
        let span = query.span();
        if let Some(with) = &query.with {
            return Err(self.err(with.with_token.0.span, "WITH (common table expressions) is not supported"));
        }
        if query.order_by.is_some() {
            return Err(self.err_at_keyword(
                Keyword::ORDER,
                span,
                "ORDER BY is not supported: a stream has no end to sort",
            ));
        }
        if query.limit_clause.is_some() || query.fetch.is_some() {
            let at = self
                .keyword_span(Keyword::LIMIT)
                .or(self.keyword_span(Keyword::OFFSET))
                .or(self.keyword_span(Keyword::FETCH));
            return Err(self.err(at.unwrap_or(span), "LIMIT, OFFSET and FETCH are not supported in a stream job"));
        }
        if !query.locks.is_empty()
            || query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return Err(self.err(
                span,
                "unsupported clause after the query: only SELECT ... FROM ... [WHERE] [GROUP BY] [HAVING]",
            ));
        }
        let select = match query.body.as_ref() {
            SetExpr::Select(select) => select.as_ref(),
            SetExpr::SetOperation { op, .. } => {
                let at = [Keyword::UNION, Keyword::INTERSECT, Keyword::EXCEPT]
                    .into_iter()
                    .find_map(|k| self.keyword_span(k));
                return Err(self.err(at.unwrap_or(span), format!("{op} is not supported: a job reads one topic")));
            }
            SetExpr::Query(inner) => {
                return Err(self.err(inner.span(), "a parenthesized query is not supported: write the SELECT directly"));
            }
            SetExpr::Values(v) => return Err(self.err(v.span(), "VALUES is not supported: a job reads a topic")),
            other => return Err(self.err(other.span(), "expected a SELECT")),
        };
        let select_span = select.select_token.0.span;
        if select.distinct.is_some() {
            return Err(self.err_at_keyword(
                Keyword::DISTINCT,
                select_span,
                "SELECT DISTINCT is not supported: use GROUP BY with a window",
            ));
        }
        if select.flavor != ast::SelectFlavor::Standard {
            return Err(self.err(select_span, "FROM-first SELECT is not supported: write SELECT ... FROM ..."));
        }
        let unsupported: [(bool, &str); 12] = [
            (select.top.is_some(), "TOP"),
            (select.into.is_some(), "SELECT INTO"),
            (!select.lateral_views.is_empty(), "LATERAL VIEW"),
            (select.prewhere.is_some(), "PREWHERE"),
            (!select.connect_by.is_empty(), "CONNECT BY"),
            (!select.cluster_by.is_empty(), "CLUSTER BY"),
            (!select.distribute_by.is_empty(), "DISTRIBUTE BY"),
            (!select.sort_by.is_empty(), "SORT BY"),
            (!select.named_window.is_empty(), "WINDOW (named windows)"),
            (select.qualify.is_some(), "QUALIFY"),
            (select.value_table_mode.is_some() || select.select_modifiers.is_some(), "this SELECT modifier"),
            (select.exclude.is_some() || !select.optimizer_hints.is_empty(), "EXCLUDE or optimizer hints"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(present, _)| *present) {
            return Err(self.err(select_span, format!("{what} is not supported in a stream job")));
        }
        Ok(select)
    }

    /// The FROM topic; sets the qualifier.
    fn source(&mut self, select: &ast::Select) -> Result<String> {
        let Some(from) = select.from.first() else {
            return Err(self.err(select.select_token.0.span, "SELECT needs FROM <topic>"));
        };
        if let Some(second) = select.from.get(1) {
            return Err(self.err(second.span(), "a job reads one topic: joins are not supported"));
        }
        if let Some(join) = from.joins.first() {
            return Err(self.err_at_keyword(
                Keyword::JOIN,
                join.span(),
                "joins are not supported: a job reads one topic",
            ));
        }
        let TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_hints,
        } = &from.relation
        else {
            let message = match &from.relation {
                TableFactor::Derived { .. } => "subqueries in FROM are not supported: FROM names a topic",
                _ => "FROM must name a topic",
            };
            return Err(self.err(from.relation.span(), message));
        };
        if args.is_some()
            || !with_hints.is_empty()
            || version.is_some()
            || *with_ordinality
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_hints.is_empty()
        {
            return Err(self.err(from.relation.span(), "FROM must name a topic, without arguments or hints"));
        }
        let Some(topic) = object_name(name).filter(|t| !t.is_empty()) else {
            return Err(self.err(name.span(), "FROM must name a topic"));
        };
        if let Some(alias) = alias {
            if !alias.columns.is_empty() {
                return Err(self.err(alias.span(), "column aliases on the topic are not supported"));
            }
            self.qualifier = Some(alias.name.value.clone());
        } else {
            self.qualifier = name.0.last().and_then(|p| p.as_ident()).map(|id| id.value.clone());
        }
        Ok(topic)
    }

    fn stateless(&mut self, select: &ast::Select, output_topic: String) -> Result<StatelessPlan> {
        let mut projections = Vec::with_capacity(select.projection.len());
        let mut names: Vec<String> = Vec::new();
        for item in &select.projection {
            let (expr, name) = match item {
                SelectItem::Wildcard(options) => {
                    self.check_wildcard(options, item.span())?;
                    projections.push(Projection::Star);
                    continue;
                }
                SelectItem::QualifiedWildcard(kind, options) => {
                    self.check_wildcard(options, item.span())?;
                    let matches = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            object_name(n).is_some_and(|n| Some(&n) == self.qualifier.as_ref())
                        }
                        SelectItemQualifiedWildcardKind::Expr(_) => false,
                    };
                    if !matches {
                        return Err(self.err(item.span(), "only the source topic's columns can be selected with .*"));
                    }
                    projections.push(Projection::Star);
                    continue;
                }
                SelectItem::UnnamedExpr(e) => (e, default_name(e)),
                SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
                SelectItem::ExprWithAliases { .. } => {
                    return Err(self.err(item.span(), "multiple aliases are not supported"));
                }
            };
            self.check_output_name(&names, &name, item.span())?;
            names.push(name.clone());
            let expr = self.expr(expr, Scope::Input(Clause::Stateless), 0)?;
            projections.push(Projection::Column { name, expr });
        }
        Ok(StatelessPlan { output_topic, projections })
    }

    fn check_wildcard(&self, options: &ast::WildcardAdditionalOptions, span: Span) -> Result<()> {
        if options.opt_ilike.is_some()
            || options.opt_exclude.is_some()
            || options.opt_except.is_some()
            || options.opt_replace.is_some()
            || options.opt_rename.is_some()
            || options.opt_alias.is_some()
        {
            return Err(self.err(span, "* with EXCLUDE, EXCEPT, REPLACE, RENAME or an alias is not supported"));
        }
        Ok(())
    }

    fn check_output_name(&self, names: &[String], name: &str, span: Span) -> Result<()> {
        if names.iter().any(|n| n == name) {
            return Err(
                self.err(span, format!("output column name \"{name}\" is used twice: give one an alias with AS"))
            );
        }
        Ok(())
    }

    fn windowed(&mut self, select: &ast::Select, group_by: &[ast::Expr], output_topic: String) -> Result<WindowedPlan> {
        // SELECT items: (expression, output name, item span).
        let mut items: Vec<(&ast::Expr, String, Span)> = Vec::with_capacity(select.projection.len());
        let mut aliases: Vec<(String, &ast::Expr)> = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) => items.push((e, default_name(e), item.span())),
                SelectItem::ExprWithAlias { expr, alias } => {
                    items.push((expr, alias.value.clone(), item.span()));
                    aliases.push((alias.value.clone(), expr));
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    return Err(self.err(
                        item.span(),
                        "SELECT * is not allowed with GROUP BY: list window_start, window_end, the keys and \
                         the aggregates",
                    ));
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(self.err(item.span(), "multiple aliases are not supported"));
                }
            }
        }

        let mut window: Option<(WindowSpec, Expr, Span)> = None;
        let mut key_asts: Vec<&ast::Expr> = Vec::new();
        for g in group_by {
            let resolved = self.resolve_group_item(g, &items, &aliases)?;
            match window_kind(resolved) {
                Some((kind, f)) => {
                    if let Some((_, _, first)) = &window {
                        return Err(self.err(
                            g.span(),
                            format!(
                                "a job has one window, found a second one (the first is at line {}, column {})",
                                first.start.line, first.start.column
                            ),
                        ));
                    }
                    let (spec, time) = self.window(kind, f)?;
                    window = Some((spec, time, g.span()));
                }
                None => key_asts.push(resolved),
            }
        }
        let Some((spec, time, _)) = window else {
            return Err(self.err(
                group_by[0].span(),
                format!(
                    "GROUP BY needs a window: add TUMBLE(time, size), HOP(time, slide, size) or \
                     SESSION(time, gap), e.g. {WINDOW_EXAMPLE}, service"
                ),
            ));
        };
        let mut key_names: Vec<Option<String>> = Vec::new();
        for k in key_asts {
            let key = self.expr(k, Scope::Input(Clause::GroupBy), 0)?;
            if !self.keys.contains(&key) {
                self.keys.push(key);
                key_names.push(self.static_path(k).and_then(|p| p.last().cloned()));
            }
        }

        let mut output: Vec<(String, Expr)> = Vec::with_capacity(items.len());
        for (e, name, span) in &items {
            if output.iter().any(|(n, _)| n == name) {
                return Err(
                    self.err(*span, format!("output column name \"{name}\" is used twice: give one an alias with AS"))
                );
            }
            let compiled = self.expr(e, Scope::Result { aliases: None }, 0)?;
            output.push((name.clone(), compiled));
        }
        let having = match &select.having {
            Some(h) => Some(self.expr(h, Scope::Result { aliases: Some(&aliases) }, 0)?),
            None => None,
        };

        let keys = std::mem::take(&mut self.keys);
        let keys = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let selected = output.iter().find(|(_, e)| *e == Expr::Column(2 + i)).map(|(n, _)| n.clone());
                let name = selected.or_else(|| key_names[i].clone()).unwrap_or_else(|| format!("key{i}"));
                (name, key)
            })
            .collect();
        Ok(WindowedPlan {
            window: spec,
            time,
            keys,
            aggregates: std::mem::take(&mut self.aggregates),
            output,
            having,
            output_topic,
        })
    }

    /// A GROUP BY item, with 1-based positions and SELECT aliases replaced by the SELECT expression.
    fn resolve_group_item<'q>(
        &self,
        g: &'q ast::Expr,
        items: &[(&'q ast::Expr, String, Span)],
        aliases: &[(String, &'q ast::Expr)],
    ) -> Result<&'q ast::Expr> {
        if let ast::Expr::Value(v) = g
            && let Value::Number(n, _) = &v.value
        {
            return match n.parse::<usize>() {
                Ok(i) if (1..=items.len()).contains(&i) => Ok(items[i - 1].0),
                _ => Err(self
                    .err(g.span(), format!("GROUP BY position {n} is not in the select list (1 to {})", items.len()))),
            };
        }
        if let ast::Expr::Identifier(id) = g
            && let Some((_, e)) = aliases.iter().find(|(alias, _)| *alias == id.value)
        {
            return Ok(e);
        }
        Ok(g)
    }

    fn window(&mut self, kind: WindowKind, f: &ast::Function) -> Result<(WindowSpec, Expr)> {
        let name = kind.name();
        let args = self.function_args(f, name)?;
        let (expected, usage) = match kind {
            WindowKind::Tumble => (2, "TUMBLE(time, size)"),
            WindowKind::Hop => (3, "HOP(time, slide, size)"),
            WindowKind::Session => (2, "SESSION(time, gap)"),
        };
        if args.len() != expected {
            return Err(self.err(f.span(), format!("{name} takes {expected} arguments, {usage}; got {}", args.len())));
        }
        let time = self.expr(args[0], Scope::Input(Clause::WindowArg), 0)?;
        let mut durations = Vec::with_capacity(2);
        for (arg, what) in args[1..].iter().zip(match kind {
            WindowKind::Tumble => ["size", ""],
            WindowKind::Hop => ["slide", "size"],
            WindowKind::Session => ["gap", ""],
        }) {
            let e = self.expr(arg, Scope::Input(Clause::WindowArg), 0)?;
            match (e.is_constant(), e.eval(&[])) {
                (true, Datum::Int(ms)) if ms > 0 => durations.push(ms),
                _ => {
                    return Err(self.err(
                        arg.span(),
                        format!("{name} {what} must be a positive interval, e.g. INTERVAL '1' MINUTE"),
                    ));
                }
            }
        }
        let spec = match kind {
            WindowKind::Tumble => WindowSpec::tumble(durations[0]),
            WindowKind::Hop => WindowSpec::hop(durations[1], durations[0]),
            WindowKind::Session => WindowSpec::session(durations[0]),
        };
        let spec = spec.map_err(|e| self.err(f.span(), format!("invalid {name}: {e}")))?;
        Ok((spec, time))
    }

    /// The unnamed argument expressions of a function call, refusing every modifier.
    fn function_args<'q>(&self, f: &'q ast::Function, name: &str) -> Result<Vec<&'q ast::Expr>> {
        let span = f.span();
        if f.over.is_some() {
            return Err(self.err(span, "window functions (OVER) are not supported: use GROUP BY with a window"));
        }
        if f.filter.is_some() {
            return Err(self.err(span, "FILTER is not supported: use CASE WHEN inside the aggregate"));
        }
        if f.null_treatment.is_some() || !f.within_group.is_empty() || f.uses_odbc_syntax {
            return Err(self.err(span, format!("unsupported modifier on {name}")));
        }
        if !matches!(f.parameters, FunctionArguments::None) {
            return Err(self.err(span, format!("parametric call of {name} is not supported")));
        }
        let list = match &f.args {
            FunctionArguments::None => return Ok(Vec::new()),
            FunctionArguments::Subquery(q) => return Err(self.err(q.span(), "subqueries are not supported")),
            FunctionArguments::List(list) => list,
        };
        if list.duplicate_treatment.is_some() {
            return Err(self.err(span, format!("DISTINCT is only supported in count(DISTINCT x), not in {name}")));
        }
        if let Some(clause) = list.clauses.first() {
            return Err(self.err(clause.span(), format!("unsupported clause in the arguments of {name}")));
        }
        let mut args = Vec::with_capacity(list.args.len());
        for arg in &list.args {
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {
                    return Err(self.err(arg.span(), format!("* is only allowed in count(*), not in {name}")));
                }
                _ => {
                    return Err(
                        self.err(arg.span(), format!("named or wildcard arguments are not supported in {name}"))
                    );
                }
            }
        }
        Ok(args)
    }

    fn column(&mut self, path: Vec<String>) -> Expr {
        let column = Column::Field(path);
        let index = match self.columns.iter().position(|c| *c == column) {
            Some(i) => i,
            None => {
                self.columns.push(column);
                self.columns.len() - 1
            }
        };
        Expr::Column(index)
    }

    /// The field path of a column reference (`a`, `t.a.b`, `a['b'][0]`, `a->'b'`), qualifier dropped.
    fn static_path(&self, e: &ast::Expr) -> Option<Vec<String>> {
        let mut path = raw_path(e)?;
        if path.len() > 1 && self.qualifier.as_deref() == Some(path[0].as_str()) && qualified(e) {
            path.remove(0);
        }
        Some(path)
    }

    /// Compiles `e`. In a result scope, aggregates, group keys, `window_start`/`window_end` and (HAVING) SELECT
    /// aliases are resolved before looking inside.
    fn expr(&mut self, e: &ast::Expr, scope: Scope, depth: usize) -> Result<Expr> {
        if depth > MAX_DEPTH {
            return Err(self.err(e.span(), format!("expression nests deeper than {MAX_DEPTH} levels")));
        }
        if let Scope::Result { aliases } = scope
            && let Some(resolved) = self.result_ref(e, aliases, depth)?
        {
            return Ok(resolved);
        }
        let compiled = self.structure(e, scope, depth + 1)?;
        Ok(fold(compiled))
    }

    fn result_ref(
        &mut self,
        e: &ast::Expr,
        aliases: Option<&[(String, &ast::Expr)]>,
        depth: usize,
    ) -> Result<Option<Expr>> {
        if let ast::Expr::Function(f) = e
            && let Some(func) = aggregate_kind(f)
        {
            return self.aggregate(f, func, depth).map(Some);
        }
        let mark = self.columns.len();
        let probe = self.expr(e, Scope::Input(Clause::Probe), depth);
        self.columns.truncate(mark);
        if let Ok(probe) = probe
            && let Some(i) = self.keys.iter().position(|k| *k == probe)
        {
            return Ok(Some(Expr::Column(2 + i)));
        }
        let Some(path) = self.static_path(e) else { return Ok(None) };
        if let [name] = path.as_slice() {
            if name.eq_ignore_ascii_case("window_start") {
                return Ok(Some(Expr::Column(0)));
            }
            if name.eq_ignore_ascii_case("window_end") {
                return Ok(Some(Expr::Column(1)));
            }
            if let Some((_, target)) = aliases.and_then(|a| a.iter().find(|(alias, _)| alias == name)) {
                return self.expr(target, Scope::Result { aliases: None }, depth + 1).map(Some);
            }
        }
        Err(self.err(e.span(), format!("column {} must appear in GROUP BY or be used in an aggregate", path.join("."))))
    }

    fn aggregate(&mut self, f: &ast::Function, func: AggFunc, depth: usize) -> Result<Expr> {
        let name = function_name(f).unwrap_or_default();
        let span = f.span();
        let distinct = match &f.args {
            FunctionArguments::List(l) => l.duplicate_treatment == Some(DuplicateTreatment::Distinct),
            _ => false,
        };
        let func = match (func, distinct) {
            (AggFunc::Count, true) => AggFunc::CountDistinct,
            (_, true) if func != AggFunc::CountDistinct => {
                return Err(self.err(span, format!("DISTINCT is only supported in count(DISTINCT x), not in {name}")));
            }
            (f, _) => f,
        };
        // count(*) is the one aggregate with a wildcard argument.
        if let FunctionArguments::List(list) = &f.args
            && let [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] = list.args.as_slice()
            && f.over.is_none()
            && f.filter.is_none()
        {
            if func != AggFunc::Count {
                return Err(self.err(span, format!("* is only allowed in count(*), not in {name}")));
            }
            return Ok(self.add_aggregate(AggregateCall { func, arg: None, percentile: None }));
        }
        let mut unmodified = f.clone();
        if let FunctionArguments::List(list) = &mut unmodified.args {
            list.duplicate_treatment = None;
        }
        let args = self.function_args(&unmodified, &name)?;
        let expected = if func == AggFunc::ApproxPercentile { 2 } else { 1 };
        if args.len() != expected {
            let usage = match func {
                AggFunc::ApproxPercentile => "approx_percentile(x, quantile)".to_string(),
                AggFunc::Count => "count(*) or count(x)".to_string(),
                _ => format!("{name}(x)"),
            };
            return Err(self.err(
                span,
                format!(
                    "{name} takes {expected} argument{}, {usage}; got {}",
                    if expected == 1 { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        let arg = self.expr(args[0], Scope::Input(Clause::AggregateArg), depth + 1)?;
        let percentile = if func == AggFunc::ApproxPercentile {
            let q = self.expr(args[1], Scope::Input(Clause::AggregateArg), depth + 1)?;
            match (q.is_constant(), q.eval(&[])) {
                (true, Datum::Float(q)) if (0.0..=1.0).contains(&q) => Some(q),
                (true, Datum::Int(q @ 0..=1)) => Some(q as f64),
                _ => {
                    return Err(self.err(
                        args[1].span(),
                        "approx_percentile quantile must be a number literal in [0, 1], e.g. 0.99",
                    ));
                }
            }
        } else {
            None
        };
        Ok(self.add_aggregate(AggregateCall { func, arg: Some(arg), percentile }))
    }

    fn add_aggregate(&mut self, call: AggregateCall) -> Expr {
        let index = match self.aggregates.iter().position(|c| *c == call) {
            Some(i) => i,
            None => {
                self.aggregates.push(call);
                self.aggregates.len() - 1
            }
        };
        Expr::Column(2 + self.keys.len() + index)
    }

    fn boxed(&mut self, e: &ast::Expr, scope: Scope, depth: usize) -> Result<Box<Expr>> {
        self.expr(e, scope, depth).map(Box::new)
    }

    /// Compiles one node by its syntax. `depth` is already the children's depth.
    fn structure(&mut self, e: &ast::Expr, scope: Scope, depth: usize) -> Result<Expr> {
        use ast::Expr as A;
        if let Some(path) = self.static_path(e) {
            // Result scopes resolved (or refused) column references already.
            return Ok(self.column(path));
        }
        Ok(match e {
            A::Value(v) => Expr::Literal(self.literal(v)?),
            A::Nested(inner) => return self.expr(inner, scope, depth),
            A::UnaryOp { op, expr } => {
                let inner = self.boxed(expr, scope, depth)?;
                match op {
                    UnaryOperator::Minus => Expr::Neg(inner),
                    UnaryOperator::Plus => *inner,
                    UnaryOperator::Not => Expr::Not(inner),
                    other => return Err(self.err(e.span(), format!("operator {other} is not supported"))),
                }
            }
            A::BinaryOp { op: op @ (BinaryOperator::And | BinaryOperator::Or), .. } => {
                let mut operands = Vec::new();
                flatten(e, op, &mut operands);
                let items = operands.into_iter().map(|o| self.expr(o, scope, depth)).collect::<Result<Vec<_>>>()?;
                if *op == BinaryOperator::And { Expr::And(items) } else { Expr::Or(items) }
            }
            A::BinaryOp { left, op, right } => self.binary(e, left, op, right, scope, depth)?,
            A::IsNull(x) | A::IsUnknown(x) => Expr::IsNull { expr: self.boxed(x, scope, depth)?, negated: false },
            A::IsNotNull(x) | A::IsNotUnknown(x) => Expr::IsNull { expr: self.boxed(x, scope, depth)?, negated: true },
            A::IsTrue(x) => Expr::IsBool { expr: self.boxed(x, scope, depth)?, value: true, negated: false },
            A::IsNotTrue(x) => Expr::IsBool { expr: self.boxed(x, scope, depth)?, value: true, negated: true },
            A::IsFalse(x) => Expr::IsBool { expr: self.boxed(x, scope, depth)?, value: false, negated: false },
            A::IsNotFalse(x) => Expr::IsBool { expr: self.boxed(x, scope, depth)?, value: false, negated: true },
            A::IsDistinctFrom(a, b) | A::IsNotDistinctFrom(a, b) => Expr::IsDistinctFrom {
                left: self.boxed(a, scope, depth)?,
                right: self.boxed(b, scope, depth)?,
                negated: matches!(e, A::IsNotDistinctFrom(..)),
            },
            A::InList { expr, list, negated } => Expr::InList {
                expr: self.boxed(expr, scope, depth)?,
                list: list.iter().map(|x| self.expr(x, scope, depth)).collect::<Result<_>>()?,
                negated: *negated,
            },
            A::Between { expr, negated, low, high } => Expr::Between {
                expr: self.boxed(expr, scope, depth)?,
                low: self.boxed(low, scope, depth)?,
                high: self.boxed(high, scope, depth)?,
                negated: *negated,
            },
            A::Like { negated, any, expr, pattern, escape_char } => {
                self.like(e, *any, expr, pattern, escape_char.as_ref(), false, *negated, scope, depth)?
            }
            A::ILike { negated, any, expr, pattern, escape_char } => {
                self.like(e, *any, expr, pattern, escape_char.as_ref(), true, *negated, scope, depth)?
            }
            A::Case { operand, conditions, else_result, .. } => Expr::Case {
                operand: operand.as_ref().map(|o| self.boxed(o, scope, depth)).transpose()?,
                branches: conditions
                    .iter()
                    .map(|c| Ok((self.expr(&c.condition, scope, depth)?, self.expr(&c.result, scope, depth)?)))
                    .collect::<Result<_>>()?,
                otherwise: else_result.as_ref().map(|o| self.boxed(o, scope, depth)).transpose()?,
            },
            A::Cast { expr, data_type, format, array, .. } => {
                if format.is_some() || *array {
                    return Err(self.err(e.span(), "CAST to arrays or with FORMAT is not supported"));
                }
                let to = self.cast_type(data_type, e.span())?;
                Expr::Cast { expr: self.boxed(expr, scope, depth)?, to }
            }
            A::TypedString(t) => {
                let to = self.cast_type(&t.data_type, e.span())?;
                let text =
                    literal_text(&t.value.value).ok_or_else(|| self.err(t.value.span, "expected a quoted literal"))?;
                let value = cast(&Datum::from(text.as_str()), to);
                if value.is_null() {
                    return Err(self.err(t.value.span, format!("invalid {} literal '{text}'", t.data_type)));
                }
                Expr::Literal(value)
            }
            A::Interval(interval) => Expr::Literal(Datum::Int(self.interval(interval, e.span())?)),
            A::Extract { field, expr, .. } => {
                let field = self.time_field(field, e.span())?;
                Expr::Call { func: Func::Extract(field), args: vec![self.expr(expr, scope, depth)?] }
            }
            A::Ceil { expr, field } | A::Floor { expr, field } => {
                if !matches!(field, CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)) {
                    return Err(self.err(e.span(), "floor/ceil take one argument; use round(x, digits) or date_trunc"));
                }
                let func = if matches!(e, A::Ceil { .. }) { Func::Ceil } else { Func::Floor };
                Expr::Call { func, args: vec![self.expr(expr, scope, depth)?] }
            }
            A::Substring { expr, substring_from, substring_for, .. } => {
                let mut args = vec![self.expr(expr, scope, depth)?];
                args.push(match substring_from {
                    Some(from) => self.expr(from, scope, depth)?,
                    None => Expr::Literal(Datum::Int(1)),
                });
                if let Some(count) = substring_for {
                    args.push(self.expr(count, scope, depth)?);
                }
                Expr::Call { func: Func::Substring, args }
            }
            A::Trim { trim_where, trim_what, expr, trim_characters } => {
                let (leading, trailing) = match trim_where {
                    Some(TrimWhereField::Leading) => (true, false),
                    Some(TrimWhereField::Trailing) => (false, true),
                    _ => (true, true),
                };
                let mut args = vec![self.expr(expr, scope, depth)?];
                let what = trim_what.as_deref().or(trim_characters.as_ref().and_then(|c| c.first()));
                if trim_characters.as_ref().is_some_and(|c| c.len() > 1) {
                    return Err(self.err(e.span(), "trim takes one set of characters"));
                }
                if let Some(what) = what {
                    args.push(self.expr(what, scope, depth)?);
                }
                Expr::Call { func: Func::Trim { leading, trailing }, args }
            }
            A::Function(f) => self.function(f, scope, depth)?,
            A::CompoundFieldAccess { root, access_chain } => {
                // A field path inside a computed JSON value (static paths were columns above).
                let mut path = Vec::with_capacity(access_chain.len());
                for access in access_chain {
                    match access_key(access) {
                        Some(key) => path.push(key),
                        None => return Err(self.err(e.span(), "field access needs a name or a literal key or index")),
                    }
                }
                Expr::Get { expr: self.boxed(root, scope, depth)?, path }
            }
            A::JsonAccess { value, path } => {
                let mut keys = Vec::with_capacity(path.path.len());
                for elem in &path.path {
                    match json_path_key(elem) {
                        Some(key) => keys.push(key),
                        None => return Err(self.err(e.span(), "JSON access needs a literal key or index")),
                    }
                }
                Expr::Get { expr: self.boxed(value, scope, depth)?, path: keys }
            }
            A::InSubquery { .. } | A::Subquery(_) | A::Exists { .. } => {
                return Err(self.err(e.span(), "subqueries are not supported in a stream job"));
            }
            A::Wildcard(_) | A::QualifiedWildcard(..) => {
                return Err(self.err(e.span(), "* is only allowed as a SELECT item or in count(*)"));
            }
            A::Position { .. } => return Err(self.err(e.span(), "position() is not supported")),
            A::SimilarTo { .. } | A::RLike { .. } => {
                return Err(self.err(e.span(), "regular expression matching is not supported: use LIKE or ILIKE"));
            }
            A::AtTimeZone { .. } => return Err(self.err(e.span(), "AT TIME ZONE is not supported: times are UTC")),
            other => {
                let text = other.to_string();
                let short: String = text.chars().take(40).collect();
                let ellipsis = if text.chars().count() > 40 { "..." } else { "" };
                return Err(self.err(e.span(), format!("unsupported expression: {short}{ellipsis}")));
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn binary(
        &mut self,
        e: &ast::Expr,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
        scope: Scope,
        depth: usize,
    ) -> Result<Expr> {
        let arith = match op {
            BinaryOperator::Plus => Some(ArithOp::Add),
            BinaryOperator::Minus => Some(ArithOp::Sub),
            BinaryOperator::Multiply => Some(ArithOp::Mul),
            BinaryOperator::Divide => Some(ArithOp::Div),
            BinaryOperator::Modulo => Some(ArithOp::Rem),
            _ => None,
        };
        let cmp = match op {
            BinaryOperator::Eq => Some(CmpOp::Eq),
            BinaryOperator::NotEq => Some(CmpOp::NotEq),
            BinaryOperator::Lt => Some(CmpOp::Lt),
            BinaryOperator::LtEq => Some(CmpOp::LtEq),
            BinaryOperator::Gt => Some(CmpOp::Gt),
            BinaryOperator::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        let is_access = matches!(op, BinaryOperator::Arrow | BinaryOperator::LongArrow);
        if arith.is_none() && cmp.is_none() && !is_access && *op != BinaryOperator::StringConcat {
            return Err(self.err(e.span(), format!("operator {op} is not supported")));
        }
        let a = self.boxed(left, scope, depth)?;
        if is_access {
            // `x -> 'key'` on a computed value.
            let Some(key) = literal_key(right) else {
                return Err(self.err(right.span(), format!("{op} needs a literal key or index")));
            };
            return Ok(match *a {
                Expr::Get { expr, mut path } => {
                    path.push(key);
                    Expr::Get { expr, path }
                }
                other => Expr::Get { expr: Box::new(other), path: vec![key] },
            });
        }
        let b = self.boxed(right, scope, depth)?;
        Ok(match (arith, cmp) {
            (Some(op), _) => Expr::Arith(op, a, b),
            (_, Some(op)) => Expr::Cmp(op, a, b),
            _ => Expr::Concat(a, b),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn like(
        &mut self,
        e: &ast::Expr,
        any: bool,
        expr: &ast::Expr,
        pattern: &ast::Expr,
        escape: Option<&ast::ValueWithSpan>,
        case_insensitive: bool,
        negated: bool,
        scope: Scope,
        depth: usize,
    ) -> Result<Expr> {
        if any {
            return Err(self.err(e.span(), "LIKE ANY is not supported: combine LIKE with OR"));
        }
        let escape = match escape {
            None => Some('\\'),
            Some(v) => {
                let text = literal_text(&v.value).ok_or_else(|| self.err(v.span, "ESCAPE needs a text literal"))?;
                let mut chars = text.chars();
                match (chars.next(), chars.next()) {
                    (None, _) => None,
                    (Some(c), None) => Some(c),
                    _ => return Err(self.err(v.span, "ESCAPE must be one character")),
                }
            }
        };
        let expr = self.boxed(expr, scope, depth)?;
        let pattern_expr = self.boxed(pattern, scope, depth)?;
        let compiled = match &*pattern_expr {
            Expr::Literal(Datum::Str(p)) => {
                Some(LikePattern::new(p, escape, case_insensitive).map_err(|m| self.err(pattern.span(), m))?)
            }
            _ => None,
        };
        Ok(Expr::Like { expr, pattern: pattern_expr, escape, case_insensitive, negated, compiled })
    }

    fn function(&mut self, f: &ast::Function, scope: Scope, depth: usize) -> Result<Expr> {
        let span = f.span();
        // `user`, `session_user`...: keywords that sqlparser reads as niladic functions, but in events they are
        // field names far more often than not.
        if matches!(f.args, FunctionArguments::None)
            && let [part] = f.name.0.as_slice()
            && let Some(id) = part.as_ident()
            && !matches!(
                id.value.to_ascii_lowercase().as_str(),
                "current_timestamp" | "current_date" | "current_time" | "localtimestamp" | "localtime" | "now"
            )
        {
            return self.expr(&ast::Expr::Identifier(id.clone()), scope, depth);
        }
        let Some(name) = function_name(f) else {
            return Err(self.err(span, format!("unknown function {}", f.name)));
        };
        if let Some(func) = aggregate_kind(f) {
            let message = match scope {
                Scope::Input(Clause::Where) => {
                    format!("aggregate function {name} is not allowed in WHERE: filter groups with HAVING")
                }
                Scope::Input(Clause::GroupBy) => format!("aggregate function {name} is not allowed in GROUP BY"),
                Scope::Input(Clause::WindowArg) => {
                    format!("aggregate function {name} is not allowed in a window's arguments")
                }
                Scope::Input(Clause::AggregateArg) => "aggregate function calls cannot be nested".to_string(),
                Scope::Input(Clause::Stateless) => {
                    format!("aggregate function {name} needs GROUP BY with a window, e.g. {WINDOW_EXAMPLE}")
                }
                Scope::Input(Clause::Probe) => String::new(),
                Scope::Result { .. } => return self.aggregate(f, func, depth),
            };
            return Err(self.err(span, message));
        }
        if let Some((kind, _)) = window_kind_of(f) {
            return Err(self.err(
                span,
                format!("{} is only allowed in GROUP BY; select window_start and window_end instead", kind.name()),
            ));
        }
        let args = self.function_args(f, &name)?;
        let (func, min, max) = match name.as_str() {
            "lower" => (Func::Lower, 1, 1),
            "upper" => (Func::Upper, 1, 1),
            "length" | "char_length" | "character_length" => (Func::Length, 1, 1),
            "substring" | "substr" => (Func::Substring, 2, 3),
            "concat" => (Func::Concat, 1, usize::MAX),
            "trim" | "btrim" => (Func::Trim { leading: true, trailing: true }, 1, 2),
            "ltrim" => (Func::Trim { leading: true, trailing: false }, 1, 2),
            "rtrim" => (Func::Trim { leading: false, trailing: true }, 1, 2),
            "replace" => (Func::Replace, 3, 3),
            "starts_with" => (Func::StartsWith, 2, 2),
            "coalesce" => (Func::Coalesce, 1, usize::MAX),
            "nullif" => (Func::NullIf, 2, 2),
            "abs" => (Func::Abs, 1, 1),
            "round" => (Func::Round, 1, 2),
            "floor" => (Func::Floor, 1, 1),
            "ceil" | "ceiling" => (Func::Ceil, 1, 1),
            "sqrt" => (Func::Sqrt, 1, 1),
            "ln" => (Func::Ln, 1, 1),
            "log10" => (Func::Log10, 1, 1),
            "power" | "pow" => (Func::Power, 2, 2),
            "greatest" => (Func::Greatest, 1, usize::MAX),
            "least" => (Func::Least, 1, usize::MAX),
            "to_timestamp" => (Func::ToTimestamp, 1, 1),
            "epoch_ms" => (Func::EpochMs, 1, 1),
            "date_trunc" | "date_part" | "json_value" => {
                self.arity(span, &name, args.len(), 2, 2)?;
                return self.function_with_literal(&name, &args, scope, depth);
            }
            "now" | "current_timestamp" | "localtimestamp" | "current_date" => {
                return Err(self.err(
                    span,
                    format!(
                        "{name}() is not supported: results must not depend on when events are processed; \
                     use event_time or ingest_time"
                    ),
                ));
            }
            _ => return Err(self.err(f.name.span(), format!("unknown function {name}"))),
        };
        self.arity(span, &name, args.len(), min, max)?;
        let args = args.into_iter().map(|a| self.expr(a, scope, depth)).collect::<Result<Vec<_>>>()?;
        Ok(Expr::Call { func, args })
    }

    fn arity(&self, span: Span, name: &str, got: usize, min: usize, max: usize) -> Result<()> {
        if (min..=max).contains(&got) {
            return Ok(());
        }
        let takes = match (min, max) {
            (1, 1) => "1 argument".to_string(),
            (a, b) if a == b => format!("{a} arguments"),
            (a, usize::MAX) => format!("at least {a} argument{}", if a == 1 { "" } else { "s" }),
            (a, b) => format!("{a} or {b} arguments"),
        };
        Err(self.err(span, format!("function {name} takes {takes}, got {got}")))
    }

    /// `date_trunc('unit', t)`, `date_part('field', t)`, `json_value(x, '$.path')`: a literal fixed at compile time.
    fn function_with_literal(&mut self, name: &str, args: &[&ast::Expr], scope: Scope, depth: usize) -> Result<Expr> {
        let (literal_arg, value_arg) = if name == "json_value" { (args[1], args[0]) } else { (args[0], args[1]) };
        let text = match self.expr(literal_arg, Scope::Input(Clause::Probe), depth) {
            Ok(Expr::Literal(Datum::Str(s))) => s.to_string(),
            _ => return Err(self.err(literal_arg.span(), format!("{name} needs a text literal here"))),
        };
        let value = self.expr(value_arg, scope, depth)?;
        match name {
            "date_trunc" => {
                let unit = match text.to_ascii_lowercase().as_str() {
                    "millisecond" | "milliseconds" => TimeUnit::Millisecond,
                    "second" => TimeUnit::Second,
                    "minute" => TimeUnit::Minute,
                    "hour" => TimeUnit::Hour,
                    "day" => TimeUnit::Day,
                    "week" => TimeUnit::Week,
                    "month" => TimeUnit::Month,
                    "quarter" => TimeUnit::Quarter,
                    "year" => TimeUnit::Year,
                    _ => {
                        return Err(self.err(
                            literal_arg.span(),
                            format!(
                                "date_trunc unit must be one of millisecond, second, minute, hour, day, week, month, \
                                 quarter, year; got '{text}'"
                            ),
                        ));
                    }
                };
                Ok(Expr::Call { func: Func::DateTrunc(unit), args: vec![value] })
            }
            "date_part" => {
                let field = field_by_name(&text).ok_or_else(|| self.err(literal_arg.span(), unknown_field(&text)))?;
                Ok(Expr::Call { func: Func::Extract(field), args: vec![value] })
            }
            _ => {
                let path = parse_json_path(&text).ok_or_else(|| {
                    self.err(
                        literal_arg.span(),
                        format!("invalid JSON path '{text}': expected e.g. '$.a.b' or '$.items[0].name'"),
                    )
                })?;
                if let (Scope::Input(_), Expr::Column(i)) = (scope, &value)
                    && let Some(Column::Field(base)) = self.columns.get(*i)
                {
                    let mut full = base.clone();
                    full.extend(path);
                    return Ok(self.column(full));
                }
                Ok(match value {
                    Expr::Get { expr, path: mut base } => {
                        base.extend(path);
                        Expr::Get { expr, path: base }
                    }
                    other => Expr::Get { expr: Box::new(other), path },
                })
            }
        }
    }

    fn literal(&self, v: &ast::ValueWithSpan) -> Result<Datum> {
        Ok(match &v.value {
            Value::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => Datum::Int(i),
                Err(_) => match n.parse::<f64>() {
                    Ok(f) if f.is_finite() => Datum::Float(f),
                    _ => return Err(self.err(v.span, format!("number {n} is out of range"))),
                },
            },
            Value::Boolean(b) => Datum::Bool(*b),
            Value::Null => Datum::Null,
            Value::Placeholder(p) => return Err(self.err(v.span, format!("query parameters ({p}) are not supported"))),
            other => match literal_text(other) {
                Some(text) => Datum::from(text.as_str()),
                None => return Err(self.err(v.span, format!("unsupported literal {other}"))),
            },
        })
    }

    fn cast_type(&self, t: &DataType, span: Span) -> Result<CastType> {
        use DataType as D;
        Ok(match t {
            D::TinyInt(_)
            | D::SmallInt(_)
            | D::MediumInt(_)
            | D::Int(_)
            | D::Integer(_)
            | D::BigInt(_)
            | D::Int2(_)
            | D::Int4(_)
            | D::Int8(_)
            | D::Int16
            | D::Int32
            | D::Int64
            | D::Signed
            | D::SignedInteger => CastType::Int,
            D::Float(_)
            | D::Double(_)
            | D::DoublePrecision
            | D::Real
            | D::Float4
            | D::Float8
            | D::Float32
            | D::Float64
            | D::Numeric(_)
            | D::Decimal(_)
            | D::Dec(_) => CastType::Float,
            D::Varchar(_)
            | D::Text
            | D::String(_)
            | D::Char(_)
            | D::Character(_)
            | D::CharacterVarying(_)
            | D::CharVarying(_)
            | D::Nvarchar(_) => CastType::Text,
            D::Bool | D::Boolean => CastType::Bool,
            D::Timestamp(..) | D::TimestampNtz(_) | D::Datetime(_) | D::Date => CastType::Time,
            D::JSON | D::JSONB => CastType::Json,
            other => {
                return Err(self.err(
                    span,
                    format!("cannot cast to {other}: use BIGINT, DOUBLE, VARCHAR, BOOLEAN, TIMESTAMP or JSON"),
                ));
            }
        })
    }

    fn interval(&self, interval: &ast::Interval, span: Span) -> Result<i64> {
        if interval.last_field.is_some() {
            return Err(
                self.err(span, "interval ranges (... TO ...) are not supported: write e.g. INTERVAL '90' SECOND")
            );
        }
        let (text, text_span) = match interval.value.as_ref() {
            ast::Expr::Value(v) => match (&v.value, literal_text(&v.value)) {
                (Value::Number(n, _), _) => (n.clone(), v.span),
                (_, Some(t)) => (t, v.span),
                _ => return Err(self.err(v.span, "INTERVAL needs a quoted value like '1 minute'")),
            },
            ast::Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match expr.as_ref() {
                ast::Expr::Value(v) if matches!(v.value, Value::Number(..)) => (format!("-{}", v.value), v.span),
                _ => return Err(self.err(span, "INTERVAL needs a literal value")),
            },
            other => return Err(self.err(other.span(), "INTERVAL needs a literal value like '1 minute'")),
        };
        let bad = || {
            self.err(
                text_span,
                format!("invalid interval '{text}': expected e.g. '1 minute', '30 seconds' or '500 milliseconds'"),
            )
        };
        match &interval.leading_field {
            None => interval_text_ms(&text).ok_or_else(|| {
                // Explain months/years rather than "invalid".
                if text.split(|c: char| !c.is_ascii_alphabetic()).any(|u| matches!(unit_ms(u), Some(Err(_)))) {
                    self.err(text_span, "intervals of months or years have no fixed length; use days")
                } else {
                    bad()
                }
            }),
            Some(field) => {
                let unit = match field {
                    DateTimeField::Millisecond | DateTimeField::Milliseconds => 1.0,
                    DateTimeField::Second | DateTimeField::Seconds => 1_000.0,
                    DateTimeField::Minute | DateTimeField::Minutes => 60_000.0,
                    DateTimeField::Hour | DateTimeField::Hours => 3_600_000.0,
                    DateTimeField::Day | DateTimeField::Days => 86_400_000.0,
                    DateTimeField::Week(None) | DateTimeField::Weeks => 604_800_000.0,
                    DateTimeField::Month | DateTimeField::Months | DateTimeField::Year | DateTimeField::Years => {
                        return Err(self.err(span, "intervals of months or years have no fixed length; use days"));
                    }
                    other => return Err(self.err(span, format!("unsupported interval unit {other}"))),
                };
                let amount: f64 = text.trim().parse().map_err(|_| bad())?;
                ms_of(amount * unit).ok_or_else(bad)
            }
        }
    }

    fn time_field(&self, field: &DateTimeField, span: Span) -> Result<TimeField> {
        let name = match field {
            DateTimeField::Custom(id) => id.value.clone(),
            DateTimeField::Week(None) => "week".to_string(),
            other => other.to_string(),
        };
        field_by_name(&name).ok_or_else(|| {
            // The field has no span of its own: point at its word before the argument.
            let at = self.word_before(&name, span.start).unwrap_or(span);
            self.err(at, unknown_field(&name.to_ascii_lowercase()))
        })
    }

    /// The last word token spelled `word` (any case) that starts before `before`.
    fn word_before(&self, word: &str, before: Location) -> Option<Span> {
        let before = (before.line, before.column);
        self.tokens
            .iter()
            .take_while(|t| (t.span.start.line, t.span.start.column) < before)
            .filter(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word)))
            .last()
            .map(|t| t.span)
    }
}

fn unknown_field(name: &str) -> String {
    format!(
        "unsupported time field {name}: use epoch, year, quarter, month, week, day, dow, doy, hour, minute, \
         second or millisecond"
    )
}

fn field_by_name(name: &str) -> Option<TimeField> {
    Some(match name.to_ascii_lowercase().as_str() {
        "epoch" => TimeField::Epoch,
        "year" | "years" => TimeField::Year,
        "quarter" => TimeField::Quarter,
        "month" | "months" => TimeField::Month,
        "week" | "isoweek" => TimeField::Week,
        "day" | "days" => TimeField::Day,
        "dow" | "dayofweek" => TimeField::DayOfWeek,
        "doy" | "dayofyear" => TimeField::DayOfYear,
        "hour" | "hours" => TimeField::Hour,
        "minute" | "minutes" => TimeField::Minute,
        "second" | "seconds" => TimeField::Second,
        "millisecond" | "milliseconds" => TimeField::Millisecond,
        _ => return None,
    })
}

/// `$.a.b[0]`, `$['a']`, or `a.b` without `$`.
fn parse_json_path(text: &str) -> Option<Vec<String>> {
    let mut rest = text.trim();
    rest = rest.strip_prefix('$').unwrap_or(rest);
    let mut path = Vec::new();
    let mut first = true;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']')?;
            let inner = after[..close].trim();
            let key = if let Some(quoted) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                quoted.to_string()
            } else if let Some(quoted) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                quoted.to_string()
            } else {
                inner.parse::<usize>().ok()?.to_string()
            };
            path.push(key);
            rest = &after[close + 1..];
        } else {
            let after = match rest.strip_prefix('.') {
                Some(after) => after,
                None if first && !text.trim_start().starts_with('$') => rest,
                None => return None,
            };
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return None;
            }
            path.push(after[..end].to_string());
            rest = &after[end..];
        }
        first = false;
    }
    Some(path)
}

/// Collects the operands of a chain of one boolean operator, left to right, without recursion.
fn flatten<'e>(e: &'e ast::Expr, op: &BinaryOperator, out: &mut Vec<&'e ast::Expr>) {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            ast::Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            other => out.push(other),
        }
    }
}

/// Folds a node whose children are all literals into its value.
fn fold(e: Expr) -> Expr {
    if matches!(e, Expr::Literal(_) | Expr::Column(_)) {
        return e;
    }
    let mut all_literal = true;
    e.for_each_child(&mut |c| all_literal &= matches!(c, Expr::Literal(_)));
    if all_literal { Expr::Literal(e.eval(&[])) } else { e }
}

fn literal_text(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s)
        | Value::DoubleQuotedString(s)
        | Value::TripleSingleQuotedString(s)
        | Value::TripleDoubleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s)
        | Value::SingleQuotedRawStringLiteral(s)
        | Value::DoubleQuotedRawStringLiteral(s)
        | Value::TripleSingleQuotedRawStringLiteral(s)
        | Value::TripleDoubleQuotedRawStringLiteral(s) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        _ => None,
    }
}

/// A literal key: text, or a non-negative integer index.
fn literal_key(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<usize>().ok().map(|i| i.to_string()),
            other => literal_text(other),
        },
        _ => None,
    }
}

fn access_key(access: &AccessExpr) -> Option<String> {
    match access {
        AccessExpr::Dot(ast::Expr::Identifier(id)) => Some(id.value.clone()),
        AccessExpr::Dot(_) => None,
        AccessExpr::Subscript(Subscript::Index { index }) => literal_key(index),
        AccessExpr::Subscript(_) => None,
    }
}

fn json_path_key(elem: &JsonPathElem) -> Option<String> {
    match elem {
        JsonPathElem::Dot { key, .. } => Some(key.clone()),
        JsonPathElem::Bracket { key } | JsonPathElem::ColonBracket { key } => literal_key(key),
    }
}

/// The path of a column reference as written (qualifier included).
fn raw_path(e: &ast::Expr) -> Option<Vec<String>> {
    match e {
        ast::Expr::Identifier(id) => Some(vec![id.value.clone()]),
        ast::Expr::CompoundIdentifier(ids) => Some(ids.iter().map(|id| id.value.clone()).collect()),
        ast::Expr::CompoundFieldAccess { root, access_chain } => {
            let mut path = raw_path(root)?;
            for access in access_chain {
                path.push(access_key(access)?);
            }
            Some(path)
        }
        ast::Expr::JsonAccess { value, path } => {
            let mut base = raw_path(value)?;
            for elem in &path.path {
                base.push(json_path_key(elem)?);
            }
            Some(base)
        }
        ast::Expr::BinaryOp { left, op: BinaryOperator::Arrow | BinaryOperator::LongArrow, right } => {
            let mut base = raw_path(left)?;
            base.push(literal_key(right)?);
            Some(base)
        }
        _ => None,
    }
}

/// Whether the first segment of `e`'s path may be a table qualifier (`t.a`, not `t->'a'` or `t['a']`).
fn qualified(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::CompoundIdentifier(_) => true,
        ast::Expr::CompoundFieldAccess { root, .. } => matches!(root.as_ref(), ast::Expr::CompoundIdentifier(_)),
        ast::Expr::JsonAccess { value, .. } => qualified(value),
        ast::Expr::BinaryOp { left, .. } => qualified(left),
        _ => false,
    }
}

fn function_name(f: &ast::Function) -> Option<String> {
    match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Some(id.value.to_ascii_lowercase()),
        _ => None,
    }
}

fn aggregate_kind(f: &ast::Function) -> Option<AggFunc> {
    Some(match function_name(f)?.as_str() {
        "count" => AggFunc::Count,
        "approx_count_distinct" => AggFunc::CountDistinct,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "avg" => AggFunc::Avg,
        "approx_percentile" => AggFunc::ApproxPercentile,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum WindowKind {
    Tumble,
    Hop,
    Session,
}

impl WindowKind {
    fn name(self) -> &'static str {
        match self {
            WindowKind::Tumble => "TUMBLE",
            WindowKind::Hop => "HOP",
            WindowKind::Session => "SESSION",
        }
    }
}

fn window_kind_of(f: &ast::Function) -> Option<(WindowKind, &ast::Function)> {
    let kind = match function_name(f)?.as_str() {
        "tumble" => WindowKind::Tumble,
        "hop" => WindowKind::Hop,
        "session" => WindowKind::Session,
        _ => return None,
    };
    Some((kind, f))
}

fn window_kind(e: &ast::Expr) -> Option<(WindowKind, &ast::Function)> {
    match e {
        ast::Expr::Function(f) => window_kind_of(f),
        _ => None,
    }
}

/// The output name of an unaliased SELECT item, as Postgres names it: the column's last name part, the function
/// name, else `?column?`.
fn default_name(e: &ast::Expr) -> String {
    use ast::Expr as A;
    match e {
        A::Identifier(id) => id.value.clone(),
        A::CompoundIdentifier(ids) => ids.last().map(|id| id.value.clone()).unwrap_or_default(),
        A::CompoundFieldAccess { root, access_chain } => {
            access_chain.last().and_then(access_key).unwrap_or_else(|| default_name(root))
        }
        A::JsonAccess { value, path } => {
            path.path.last().and_then(json_path_key).unwrap_or_else(|| default_name(value))
        }
        A::BinaryOp { op: BinaryOperator::Arrow | BinaryOperator::LongArrow, right, .. } => {
            literal_key(right).unwrap_or_else(|| "?column?".to_string())
        }
        A::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map_or_else(|| "?column?".to_string(), |id| id.value.to_ascii_lowercase()),
        A::Cast { expr, .. } | A::Nested(expr) => default_name(expr),
        A::Floor { .. } => "floor".to_string(),
        A::Ceil { .. } => "ceil".to_string(),
        A::Substring { .. } => "substring".to_string(),
        A::Trim { .. } => "trim".to_string(),
        A::Extract { .. } => "extract".to_string(),
        A::Case { .. } => "case".to_string(),
        A::Interval(_) => "interval".to_string(),
        A::TypedString(_) => "timestamp".to_string(),
        _ => "?column?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use super::*;
    use crate::agg::AggState;
    use crate::plan::{Meta, RecordMeta};
    use crate::window::Window;

    const EXAMPLE: &str = "CREATE JOB errors_per_minute AS
SELECT window_start, window_end, service, count(*) AS errors,
       avg(latency_ms) AS avg_ms, approx_percentile(latency_ms, 0.99) AS p99_ms
FROM http_requests
WHERE status >= 500
GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";

    fn field(path: &[&str]) -> Column {
        Column::Field(path.iter().map(|s| s.to_string()).collect())
    }

    fn windowed(plan: &JobPlan) -> &WindowedPlan {
        match &plan.body {
            PlanBody::Windowed(w) => w,
            other => panic!("not windowed: {other:?}"),
        }
    }

    fn stateless(plan: &JobPlan) -> &StatelessPlan {
        match &plan.body {
            PlanBody::Stateless(s) => s,
            other => panic!("not stateless: {other:?}"),
        }
    }

    /// The error of `sql`, asserting it contains `needle` and is at `line:column`.
    #[track_caller]
    fn fails(sql: &str, needle: &str, line: u64, column: u64) {
        let shown: String = sql.chars().take(200).collect();
        let sql_text = sql;
        let sql = shown.as_str();
        match parse_job(sql_text) {
            Ok(plan) => panic!("{sql:?} compiled: {plan:?}"),
            Err(e) => {
                assert!(e.message.contains(needle), "{sql:?}: {e} does not contain {needle:?}");
                assert_eq!((e.line, e.column), (line, column), "{sql:?}: {e}");
                assert_eq!(e.message, e.message.trim());
            }
        }
    }

    fn meta() -> RecordMeta<'static> {
        RecordMeta { timestamp: 1_000, append_time: 2_000, key: Some(b"k1"), partition: 3, offset: 42 }
    }

    /// Evaluates one expression over one event through a stateless job.
    #[track_caller]
    fn eval(expr: &str, event: Json) -> Json {
        let sql = format!("CREATE JOB t AS SELECT {expr} AS v FROM s");
        let plan = parse_job(&sql).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let mut row = Vec::new();
        plan.extract(&event, &meta(), &mut row);
        let mut out = stateless(&plan).project(&event, &row);
        out["v"].take()
    }

    #[test]
    fn example_job_compiles_to_the_plan() {
        let plan = parse_job(EXAMPLE).unwrap();
        assert_eq!(plan.name, "errors_per_minute");
        assert_eq!(plan.source, "http_requests");
        assert_eq!(
            plan.options,
            JobOptions { late_topic: Some("errors_per_minute.late".into()), ..JobOptions::default() }
        );
        assert_eq!(
            plan.columns,
            vec![field(&["status"]), field(&["event_time"]), field(&["service"]), field(&["latency_ms"])]
        );
        assert_eq!(
            plan.filter,
            Some(Expr::Cmp(CmpOp::GtEq, Box::new(Expr::Column(0)), Box::new(Expr::Literal(Datum::Int(500)))))
        );
        let w = windowed(&plan);
        assert_eq!(w.window, WindowSpec::Tumble { size: 60_000 });
        assert_eq!(w.time, Expr::Column(1));
        assert_eq!(w.keys, vec![("service".to_string(), Expr::Column(2))]);
        assert_eq!(
            w.aggregates,
            vec![
                AggregateCall { func: AggFunc::Count, arg: None, percentile: None },
                AggregateCall { func: AggFunc::Avg, arg: Some(Expr::Column(3)), percentile: None },
                AggregateCall { func: AggFunc::ApproxPercentile, arg: Some(Expr::Column(3)), percentile: Some(0.99) },
            ]
        );
        let names: Vec<&str> = w.output.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["window_start", "window_end", "service", "errors", "avg_ms", "p99_ms"]);
        for (i, (_, e)) in w.output.iter().enumerate() {
            assert_eq!(*e, Expr::Column(i));
        }
        assert_eq!(w.having, None);
        assert_eq!(w.output_topic, "errors_per_minute.results");
    }

    #[test]
    fn example_job_runs_end_to_end() {
        let plan = parse_job(EXAMPLE).unwrap();
        let w = windowed(&plan);
        let events = [
            json!({"status": 503, "service": "api", "latency_ms": 120, "event_time": "2026-11-28T08:01:10Z"}),
            json!({"status": 500, "service": "api", "latency_ms": 80.5, "event_time": "2026-11-28T08:01:20Z"}),
            json!({"status": 200, "service": "api", "latency_ms": 5, "event_time": "2026-11-28T08:01:30Z"}),
            json!({"status": "oops", "service": "api"}),
        ];
        let mut states: Vec<AggState> = w.aggregates.iter().map(AggState::new).collect();
        let mut row = Vec::new();
        let mut times = Vec::new();
        for event in &events {
            plan.extract(event, &meta(), &mut row);
            if !plan.passes(&row) {
                continue;
            }
            times.push(w.event_time(&row));
            assert_eq!(w.key_values(&row), vec![Datum::from("api")]);
            for (state, call) in states.iter_mut().zip(&w.aggregates) {
                state.update(call, &row);
            }
        }
        assert_eq!(times, [Some(1_795_852_870_000), Some(1_795_852_880_000)]);
        let window = Window::new(1_795_852_860_000, 1_795_852_920_000);
        let out = w.result_row(window, &[Datum::from("api")], &states).unwrap();
        assert_eq!(out["window_start"], json!("2026-11-28T08:01:00.000Z"));
        assert_eq!(out["window_end"], json!("2026-11-28T08:02:00.000Z"));
        assert_eq!(out["service"], json!("api"));
        assert_eq!(out["errors"], json!(2));
        assert_eq!(out["avg_ms"], json!(100.25));
        // The nearest-rank quantile: element ceil(0.99 * 2) - 1 = 1 of [80.5, 120], within 1%.
        let p99 = out["p99_ms"].as_f64().unwrap();
        assert!((p99 - 120.0).abs() <= 1.2, "{p99}");
        // Missing states read as NULL, never a panic.
        let out = w.result_row(window, &[], &[]).unwrap();
        assert_eq!(out["errors"], json!(null));
    }

    #[test]
    fn having_aliases_and_positions() {
        let plan = parse_job(
            "CREATE JOB j AS SELECT lower(service) AS svc, region, count(*) AS n, WINDOW_END - window_start AS len \
             FROM t GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE), svc, 2 HAVING n > 1 AND count(*) < 10",
        )
        .unwrap();
        let w = windowed(&plan);
        assert_eq!(w.window, WindowSpec::Hop { size: 60_000, slide: 10_000 });
        assert_eq!(w.keys.len(), 2);
        assert_eq!(w.keys[0].0, "svc");
        assert_eq!(w.keys[1].0, "region");
        assert_eq!(w.aggregates.len(), 1, "count(*) in HAVING is the selected one");
        let mut state = AggState::new(&w.aggregates[0]);
        let window = Window::new(0, 60_000);
        let keys = [Datum::from("api"), Datum::from("eu")];
        assert_eq!(w.result_row(window, &keys, std::slice::from_ref(&state)), None);
        state.update(&w.aggregates[0], &[]);
        state.update(&w.aggregates[0], &[]);
        let out = w.result_row(window, &keys, &[state]).unwrap();
        assert_eq!(Json::Object(out), json!({"svc": "api", "region": "eu", "n": 2, "len": 60_000}));
    }

    #[test]
    fn key_names_and_session() {
        let plan = parse_job(
            "CREATE JOB j AS SELECT count(*) FROM t GROUP BY SESSION(event_time, INTERVAL '30 seconds'), a.b, lower(c)",
        )
        .unwrap();
        let w = windowed(&plan);
        assert_eq!(w.window, WindowSpec::Session { gap: 30_000 });
        let names: Vec<&str> = w.keys.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "key1"]);
        assert_eq!(w.output[0].0, "count");
        assert_eq!(plan.columns, vec![field(&["event_time"]), field(&["a", "b"]), field(&["c"])]);
    }

    #[test]
    fn stateless_jobs() {
        let plan = parse_job(
            "CREATE JOB clean WITH (start = 'latest') AS INSERT INTO \"clean-events\" \
             SELECT *, upper(r.service) AS service, status / 100 AS class \
             FROM \"http-requests\" AS r WHERE r.status <> 200;",
        )
        .unwrap();
        assert_eq!(plan.source, "http-requests");
        assert!(plan.options.start_from_latest);
        let s = stateless(&plan);
        assert_eq!(s.output_topic, "clean-events");
        assert_eq!(s.projections.len(), 3);
        assert_eq!(plan.columns, vec![field(&["status"]), field(&["service"])]);
        let event = json!({"status": 503, "service": "api", "extra": [1]});
        let mut row = Vec::new();
        plan.extract(&event, &meta(), &mut row);
        assert!(plan.passes(&row));
        assert_eq!(s.project(&event, &row), json!({"status": 503, "service": "API", "extra": [1], "class": 5}));
        let dotted = parse_job("CREATE JOB j AS SELECT a FROM logs.http").unwrap();
        assert_eq!(dotted.source, "logs.http");
        assert_eq!(stateless(&dotted).output_topic, "j.out");
        let with_topic = parse_job("CREATE JOB j WITH (output_topic = 'x.y') AS SELECT a FROM t").unwrap();
        assert_eq!(with_topic.output_topic(), "x.y");
        let windowed_insert =
            parse_job("CREATE JOB j AS INSERT INTO out.topic SELECT count(*) AS n FROM t GROUP BY TUMBLE(ts, 1000)")
                .unwrap();
        assert_eq!(windowed_insert.output_topic(), "out.topic");
    }

    #[test]
    fn metadata_columns_fall_back() {
        let plan = parse_job(
            "CREATE JOB j AS SELECT event_time, ingest_time, _key, _partition, _offset, x.event_time AS nested FROM t",
        )
        .unwrap();
        let mut row = Vec::new();
        plan.extract(&json!({"_partition": "mine"}), &meta(), &mut row);
        assert_eq!(
            row,
            vec![
                Datum::Time(1_000),
                Datum::Time(2_000),
                Datum::from("k1"),
                Datum::from("mine"),
                Datum::Int(42),
                Datum::Null
            ]
        );
        let no_key = RecordMeta { key: Some(&[0xFF, 0xFE]), ..meta() };
        plan.extract(&json!(null), &no_key, &mut row);
        assert_eq!(row[2], Datum::Null);
        assert_eq!(row[3], Datum::Int(3));
        assert_eq!(Column::Meta(Meta::Offset).extract(&json!({}), &meta()), Datum::Int(42));
    }

    #[test]
    fn nested_fields() {
        let event = json!({"a": {"b": {"c": 7}}, "p": {"items": [{"name": "x"}], "k": "v"}, "t": {"status": 1}});
        assert_eq!(eval("a.b.c", event.clone()), json!(7));
        assert_eq!(eval("a['b']['c']", event.clone()), json!(7));
        assert_eq!(eval("p->>'k'", event.clone()), json!("v"));
        assert_eq!(eval("p->'items'->0->>'name'", event.clone()), json!("x"));
        assert_eq!(eval("json_value(p, '$.items[0].name')", event.clone()), json!("x"));
        assert_eq!(eval("json_value(coalesce(p, a), '$.items[0].name')", event.clone()), json!("x"));
        assert_eq!(eval("coalesce(p, a)['k']", event.clone()), json!("v"));
        assert_eq!(eval("a.missing.c", event.clone()), json!(null));
        assert_eq!(eval("p", event.clone()), event["p"]);
        // `s` is the topic, so `s.a` is `a`; `t` is just a field here.
        assert_eq!(eval("s.a.b.c", event.clone()), json!(7));
        assert_eq!(eval("t.status", event), json!(1));
        let plan = parse_job("CREATE JOB j AS SELECT a.b, a['b'], a->'b', json_value(a, '$.b') FROM t").unwrap_err();
        assert!(plan.message.contains("used twice"), "{plan}");
    }

    #[test]
    fn expression_semantics_through_sql() {
        let e = json!({"i": 7, "f": 2.5, "s": "Hello", "n": null, "t": "2026-11-28T08:01:02.345Z", "b": true});
        let cases: &[(&str, Json)] = &[
            ("i + 1", json!(8)),
            ("i / 2", json!(3)),
            ("i % 4", json!(3)),
            ("i / 0", json!(null)),
            ("i * f", json!(17.5)),
            ("-i", json!(-7)),
            ("9223372036854775807 + i", json!(null)),
            ("n + 1", json!(null)),
            ("s || '!' || i", json!("Hello!7")),
            ("s || n", json!(null)),
            ("concat(s, n, i)", json!("Hello7")),
            ("i > 5 AND n", json!(null)),
            ("i < 5 AND n", json!(false)),
            ("i > 5 OR n", json!(true)),
            ("NOT (i < 5 OR n)", json!(null)),
            ("n IS NULL", json!(true)),
            ("missing IS NOT NULL", json!(false)),
            ("b IS TRUE", json!(true)),
            ("n IS NOT FALSE", json!(true)),
            ("n IS DISTINCT FROM 1", json!(true)),
            ("i IN (1, 7)", json!(true)),
            ("i NOT IN (1, n)", json!(null)),
            ("i BETWEEN 1 AND 7", json!(true)),
            ("i NOT BETWEEN 1 AND 7", json!(false)),
            ("s LIKE 'H%o'", json!(true)),
            ("s LIKE 'h%'", json!(false)),
            ("s ILIKE 'h_llo'", json!(true)),
            ("s NOT LIKE '%x%'", json!(true)),
            ("'a%b' LIKE 'a!%b' ESCAPE '!'", json!(true)),
            ("s LIKE s", json!(true)),
            ("CASE WHEN i > 10 THEN 'big' WHEN i > 5 THEN 'mid' ELSE 'small' END", json!("mid")),
            ("CASE i WHEN 1 THEN 'one' WHEN 7 THEN 'seven' END", json!("seven")),
            ("CASE n WHEN 1 THEN 'one' END", json!(null)),
            ("CAST(f AS BIGINT)", json!(3)),
            ("CAST(i AS DOUBLE)", json!(7.0)),
            ("CAST(i AS VARCHAR)", json!("7")),
            ("CAST('12' AS INT) + 1", json!(13)),
            ("'true'::boolean", json!(true)),
            ("CAST(s AS INTEGER)", json!(null)),
            ("CAST(t AS TIMESTAMP)", json!("2026-11-28T08:01:02.345Z")),
            ("t::timestamp + INTERVAL '1' MINUTE", json!("2026-11-28T08:02:02.345Z")),
            ("t::timestamp - TIMESTAMP '2026-11-28T08:00:00Z'", json!(62_345)),
            ("t::timestamp > '2026-11-28T08:00:00Z'", json!(true)),
            ("t::timestamp BETWEEN TIMESTAMP '2026-11-28 08:00:00' AND '2026-11-28T09:00:00Z'", json!(true)),
            ("date_trunc('minute', t)", json!("2026-11-28T08:01:00.000Z")),
            ("date_trunc('HOUR', t::timestamp)", json!("2026-11-28T08:00:00.000Z")),
            ("extract(epoch FROM t::timestamp)", json!(1_795_852_862.345)),
            ("EXTRACT(YEAR FROM t)", json!(2026)),
            ("extract(dow from t)", json!(6)),
            ("date_part('month', t)", json!(11)),
            ("extract(second from t)", json!(2.345)),
            ("to_timestamp(60)", json!("1970-01-01T00:01:00.000Z")),
            ("to_timestamp('2026-11-28T08:00:00Z')", json!("2026-11-28T08:00:00.000Z")),
            ("epoch_ms(t)", json!(1_795_852_862_345i64)),
            ("epoch_ms(event_time)", json!(1_000)),
            ("INTERVAL '500 milliseconds'", json!(500)),
            ("INTERVAL '1 hour 30 minutes'", json!(5_400_000)),
            ("INTERVAL '2' DAY", json!(172_800_000)),
            ("INTERVAL '1.5' SECOND", json!(1_500)),
            ("lower(s) || upper(s)", json!("helloHELLO")),
            ("length(s)", json!(5)),
            ("char_length('héllo')", json!(5)),
            ("substring(s, 2, 3)", json!("ell")),
            ("substring(s FROM 2 FOR 3)", json!("ell")),
            ("substr(s, 4)", json!("lo")),
            ("trim('  x  ')", json!("x")),
            ("trim(BOTH 'x' FROM 'xxaxx')", json!("a")),
            ("trim(LEADING 'x' FROM 'xxaxx')", json!("axx")),
            ("ltrim('  x')", json!("x")),
            ("rtrim('x--', '-')", json!("x")),
            ("replace(s, 'l', 'L')", json!("HeLLo")),
            ("starts_with(s, 'He')", json!(true)),
            ("coalesce(n, missing, i)", json!(7)),
            ("nullif(i, 7)", json!(null)),
            ("abs(-f)", json!(2.5)),
            ("round(f)", json!(3.0)),
            ("round(2.71828, 2)", json!(2.72)),
            ("floor(f)", json!(2.0)),
            ("ceil(f)", json!(3.0)),
            ("ceiling(i)", json!(7)),
            ("sqrt(16)", json!(4.0)),
            ("sqrt(-1)", json!(null)),
            ("ln(1)", json!(0.0)),
            ("log10(100)", json!(2.0)),
            ("power(2, 3)", json!(8.0)),
            ("greatest(1, i, f)", json!(7)),
            ("least(1, i, f, n)", json!(1)),
            ("1.5e3", json!(1500.0)),
            ("TRUE AND NULL", json!(null)),
            ("'it''s'", json!("it's")),
        ];
        for (expr, expected) in cases {
            assert_eq!(eval(expr, e.clone()), *expected, "{expr}");
        }
    }

    #[test]
    fn constants_are_folded() {
        let plan = parse_job("CREATE JOB j AS SELECT 1 + 2 * 3 AS x, -(5) AS y, upper('a') AS z FROM t").unwrap();
        let s = stateless(&plan);
        let exprs: Vec<&Expr> = s
            .projections
            .iter()
            .map(|p| match p {
                Projection::Column { expr, .. } => expr,
                Projection::Star => panic!(),
            })
            .collect();
        assert_eq!(
            exprs,
            [&Expr::Literal(Datum::Int(7)), &Expr::Literal(Datum::Int(-5)), &Expr::Literal(Datum::from("A"))]
        );
        assert!(plan.columns.is_empty());
    }

    #[test]
    fn options() {
        let plan = parse_job(
            "CREATE JOB j WITH (out_of_orderness = '10s', allowed_lateness = 2000, IDLE_TIMEOUT = 'off', \
             buffer_timeout = '50ms', parallelism = 4, late_topic = 'x.late', hot_retention = '1 minute', \
             start = earliest) \
             AS SELECT a FROM t",
        )
        .unwrap();
        assert_eq!(
            plan.options,
            JobOptions {
                out_of_orderness_ms: 10_000,
                allowed_lateness_ms: 2_000,
                idle_timeout_ms: None,
                buffer_timeout_ms: 50,
                parallelism: Some(4),
                late_topic: Some("x.late".into()),
                hot_retention_ms: 60_000,
                start_from_latest: false,
            }
        );
        let plan = parse_job("CREATE JOB j WITH (idle_timeout = '1m') AS SELECT a FROM t").unwrap();
        assert_eq!(plan.options.idle_timeout_ms, Some(60_000));
        let plan = parse_job("CREATE JOB j WITH (idle_timeout = 0) AS SELECT a FROM t").unwrap();
        assert_eq!(plan.options.idle_timeout_ms, None);
        let plan = parse_job("CREATE JOB j WITH () AS SELECT a FROM t").unwrap();
        assert_eq!(plan.options.out_of_orderness_ms, 5_000);
    }

    #[test]
    fn prefix_errors() {
        fails("", "expected CREATE JOB", 1, 1);
        fails("SELECT a FROM t", "expected CREATE JOB", 1, 1);
        fails("CREATE TABLE t (a INT)", "expected JOB after CREATE", 1, 8);
        fails("CREATE JOB AS SELECT a FROM t", "expected a job name, found 'AS'", 1, 12);
        fails("CREATE JOB \"a b\" AS SELECT a FROM t", "job name must be", 1, 12);
        fails("CREATE JOB j SELECT a FROM t", "expected AS before the query, found 'SELECT'", 1, 14);
        fails("CREATE JOB j AS", "expected SELECT or INSERT INTO after AS, found end of input", 1, 16);
        fails("CREATE JOB j WITH AS SELECT a FROM t", "expected '(' after WITH", 1, 19);
        fails(
            "CREATE JOB j WITH (foo = 1) AS SELECT a FROM t",
            "unknown option foo; valid options: allowed_lateness",
            1,
            20,
        );
        fails(
            "CREATE JOB j WITH (parallelism = 0) AS SELECT a FROM t",
            "parallelism must be an integer from 1 to 4096, got 0",
            1,
            20,
        );
        fails(
            "CREATE JOB j WITH (out_of_orderness = 'soon') AS SELECT a FROM t",
            "must be a duration like '5s'",
            1,
            20,
        );
        fails(
            "CREATE JOB j WITH (allowed_lateness = -5) AS SELECT a FROM t",
            "allowed_lateness must be >= 0, got -5",
            1,
            20,
        );
        fails("CREATE JOB j WITH (start = 'now') AS SELECT a FROM t", "start must be 'earliest' or 'latest'", 1, 20);
        fails(
            "CREATE JOB j WITH (start = 'latest', start = 'latest') AS SELECT a FROM t",
            "option start is given twice",
            1,
            38,
        );
        fails("CREATE JOB j WITH (start 'latest') AS SELECT a FROM t", "expected '=' after option start", 1, 26);
        fails("CREATE JOB j WITH (start = ) AS SELECT a FROM t", "expected a value for option start", 1, 28);
        fails("CREATE JOB j WITH (start = 'latest' AS SELECT a FROM t", "expected ',' or ')'", 1, 37);
        fails("CREATE JOB j AS SELECT 'unterminated FROM t", "unterminated", 1, 24);
        fails(
            "CREATE JOB j WITH (output_topic = 'a') AS INSERT INTO b SELECT a FROM t",
            "output_topic conflicts with INSERT INTO",
            1,
            20,
        );
        fails(
            "CREATE JOB j AS INSERT INTO b (x) SELECT a FROM t",
            "column lists in INSERT INTO are not supported",
            1,
            31,
        );
        fails("CREATE JOB j AS INSERT INTO t SELECT a FROM t", "INSERT INTO the source topic", 1, 29);
    }

    #[test]
    fn syntax_errors_keep_positions() {
        fails("CREATE JOB j AS\nSELECT a FROM t WHERE", "expected: an expression, found: end of input", 2, 22);
        fails("CREATE JOB j AS\n  SELECT a,, b FROM t", "expected: an expression", 2, 12);
        fails("CREATE JOB j AS SELECT a FROM t; SELECT b FROM t", "unexpected 'SELECT' after the query", 1, 34);
        fails("CREATE JOB j AS UPDATE t SET a = 1", "expected a SELECT", 1, 17);
        let nested = format!("CREATE JOB j AS SELECT {}1{} FROM t", "(".repeat(80), ")".repeat(80));
        fails(&nested, "nests too deeply", 1, 73);
        let long = format!("CREATE JOB j AS SELECT a FROM t WHERE a IN ({}0)", "0, ".repeat(6000));
        fails(&long, "more than 10000 tokens", 1, 45 + 4994 * 3);
        let deep = format!("CREATE JOB j AS SELECT {}1 FROM t", "a + ".repeat(200));
        fails(&deep, "nests deeper than 128 levels", 1, 24);
    }

    #[test]
    fn unsupported_query_shapes() {
        fails("CREATE JOB j AS SELECT a FROM t ORDER BY a", "ORDER BY is not supported", 1, 33);
        fails("CREATE JOB j AS SELECT a FROM t LIMIT 5", "LIMIT, OFFSET and FETCH are not supported", 1, 33);
        fails("CREATE JOB j AS SELECT a FROM t UNION SELECT a FROM u", "UNION is not supported", 1, 33);
        fails("CREATE JOB j AS SELECT a FROM t JOIN u ON t.a = u.a", "joins are not supported", 1, 33);
        fails("CREATE JOB j AS SELECT a FROM t, u", "joins are not supported", 1, 34);
        fails("CREATE JOB j AS SELECT a FROM (SELECT a FROM t)", "subqueries in FROM are not supported", 1, 32);
        fails("CREATE JOB j AS SELECT a FROM t WHERE a IN (SELECT b FROM u)", "subqueries are not supported", 1, 39);
        fails("CREATE JOB j AS SELECT DISTINCT a FROM t", "SELECT DISTINCT is not supported", 1, 24);
        fails("CREATE JOB j AS SELECT a", "SELECT needs FROM <topic>", 1, 17);
        fails("CREATE JOB j AS WITH x AS (SELECT a FROM t) SELECT a FROM x", "WITH (common table expressions)", 1, 17);
        fails("CREATE JOB j AS SELECT row_number() OVER () FROM t", "window functions (OVER) are not supported", 1, 24);
        fails(
            "CREATE JOB j AS SELECT sum(a) OVER (ORDER BY b) FROM t GROUP BY TUMBLE(ts, 1000)",
            "window functions (OVER)",
            1,
            24,
        );
        fails("CREATE JOB j AS SELECT a FROM t WHERE a SIMILAR TO 'x'", "use LIKE or ILIKE", 1, 39);
    }

    #[test]
    fn semantic_errors() {
        fails("CREATE JOB j AS SELECT frobnicate(a) FROM t", "unknown function frobnicate", 1, 24);
        fails("CREATE JOB j AS SELECT lower(a, b) FROM t", "function lower takes 1 argument, got 2", 1, 24);
        fails("CREATE JOB j AS SELECT round() FROM t", "function round takes 1 or 2 arguments, got 0", 1, 24);
        fails("CREATE JOB j AS SELECT coalesce() FROM t", "takes at least 1 argument, got 0", 1, 24);
        fails("CREATE JOB j AS SELECT now() FROM t", "now() is not supported", 1, 24);
        fails("CREATE JOB j AS SELECT date_trunc('fortnight', t) FROM t", "date_trunc unit must be one of", 1, 35);
        fails("CREATE JOB j AS SELECT date_trunc(u, t) FROM t", "date_trunc needs a text literal", 1, 35);
        fails("CREATE JOB j AS SELECT json_value(p, 'a..b') FROM t", "invalid JSON path 'a..b'", 1, 38);
        fails("CREATE JOB j AS SELECT extract(isodow FROM t) FROM t", "unsupported time field isodow", 1, 32);
        fails("CREATE JOB j AS SELECT CAST(a AS BLOB) FROM t", "cannot cast to BLOB", 1, 29);
        fails("CREATE JOB j AS SELECT TIMESTAMP 'soon' FROM t", "invalid TIMESTAMP literal 'soon'", 1, 34);
        fails("CREATE JOB j AS SELECT INTERVAL '1' MONTH FROM t", "months or years have no fixed length", 1, 33);
        fails("CREATE JOB j AS SELECT INTERVAL '3 fortnights' FROM t", "invalid interval '3 fortnights'", 1, 33);
        fails("CREATE JOB j AS SELECT a LIKE 'x\\' FROM t", "must not end with the escape character", 1, 31);
        fails("CREATE JOB j AS SELECT $1 FROM t", "query parameters ($1) are not supported", 1, 24);
        fails(
            "CREATE JOB j AS SELECT a, b.a FROM t",
            "output column name \"a\" is used twice: give one an alias with AS",
            1,
            27,
        );
        fails("CREATE JOB j AS SELECT a & b FROM t", "operator & is not supported", 1, 24);
    }

    #[test]
    fn grouping_errors() {
        let head = "CREATE JOB j AS SELECT ";
        fails(&format!("{head}count(*) FROM t"), "aggregate function count needs GROUP BY with a window", 1, 24);
        fails(&format!("{head}a FROM t HAVING a > 1"), "HAVING needs GROUP BY", 1, 33);
        fails(
            &format!("{head}a, count(*) FROM t GROUP BY a"),
            "GROUP BY needs a window: add TUMBLE(time, size)",
            1,
            52,
        );
        fails(
            &format!("{head}a, count(*) FROM t\nGROUP BY TUMBLE(ts, 1000)"),
            "column a must appear in GROUP BY or be used in an aggregate",
            1,
            24,
        );
        fails(
            &format!("{head}count(*) FROM t GROUP BY TUMBLE(ts, 1000) HAVING b.c > 1"),
            "column b.c must appear in GROUP BY",
            1,
            73,
        );
        fails(&format!("{head}a FROM t WHERE count(*) > 1"), "not allowed in WHERE: filter groups with HAVING", 1, 39);
        fails(
            &format!("{head}sum(count(a)) FROM t GROUP BY TUMBLE(ts, 1000)"),
            "aggregate function calls cannot be nested",
            1,
            28,
        );
        fails(
            &format!("{head}count(*) FROM t GROUP BY TUMBLE(ts, 1000), HOP(ts, 10, 100)"),
            "a job has one window, found a second one (the first is at line 1, column 49)",
            1,
            67,
        );
        fails(
            &format!("{head}count(*) FROM t GROUP BY TUMBLE(ts, -1)"),
            "TUMBLE size must be a positive interval",
            1,
            61,
        );
        fails(
            &format!("{head}count(*) FROM t GROUP BY TUMBLE(ts, a)"),
            "TUMBLE size must be a positive interval",
            1,
            60,
        );
        fails(&format!("{head}count(*) FROM t GROUP BY TUMBLE(ts)"), "TUMBLE takes 2 arguments", 1, 49);
        fails(
            &format!("{head}count(*) FROM t GROUP BY HOP(ts, INTERVAL '2' MINUTE, INTERVAL '1' MINUTE)"),
            "invalid HOP: window slide must be <= size",
            1,
            49,
        );
        fails(
            &format!("{head}count(*) FROM t GROUP BY TUMBLE(ts, 1000), 5"),
            "GROUP BY position 5 is not in the select list (1 to 1)",
            1,
            67,
        );
        fails(&format!("{head}TUMBLE(ts, 1000) FROM t"), "TUMBLE is only allowed in GROUP BY", 1, 24);
        fails(&format!("{head}* FROM t GROUP BY TUMBLE(ts, 1000)"), "SELECT * is not allowed with GROUP BY", 1, 24);
        fails(
            &format!("{head}approx_percentile(a, 1.5) FROM t GROUP BY TUMBLE(ts, 1000)"),
            "quantile must be a number literal in [0, 1]",
            1,
            45,
        );
        fails(
            &format!("{head}approx_percentile(a) FROM t GROUP BY TUMBLE(ts, 1000)"),
            "approx_percentile takes 2 arguments",
            1,
            24,
        );
        fails(
            &format!("{head}sum(DISTINCT a) FROM t GROUP BY TUMBLE(ts, 1000)"),
            "DISTINCT is only supported in count(DISTINCT x), not in sum",
            1,
            24,
        );
        fails(
            &format!("{head}sum(*) FROM t GROUP BY TUMBLE(ts, 1000)"),
            "* is only allowed in count(*), not in sum",
            1,
            24,
        );
        fails(&format!("{head}count(*) FROM t GROUP BY TUMBLE(ts, 1000), count(*)"), "not allowed in GROUP BY", 1, 67);
        fails(
            &format!("{head}count(*) FILTER (WHERE a) FROM t GROUP BY TUMBLE(ts, 1000)"),
            "FILTER is not supported",
            1,
            24,
        );
        fails(&format!("{head}count(*), count(a) FROM t GROUP BY TUMBLE(ts, 1000)"), "\"count\" is used twice", 1, 34);
    }

    #[test]
    fn count_distinct_and_ordinals() {
        let plan = parse_job(
            "CREATE JOB j AS SELECT window_start AS ws, u, count(DISTINCT user_id) AS users, \
             approx_count_distinct(user_id) AS users2 \
             FROM t GROUP BY 2, TUMBLE(ts, INTERVAL 1 MINUTE)",
        )
        .unwrap();
        let w = windowed(&plan);
        assert_eq!(w.keys, vec![("u".to_string(), Expr::Column(1))]);
        assert_eq!(w.aggregates.len(), 1);
        assert_eq!(w.aggregates[0].func, AggFunc::CountDistinct);
        assert_eq!(w.output[3].1, Expr::Column(3));
    }

    #[test]
    fn plans_are_shareable() {
        fn shareable<T: Send + Sync + Clone>() {}
        shareable::<JobPlan>();
        shareable::<AggState>();
        shareable::<SqlError>();
    }

    #[test]
    fn errors_display_with_position() {
        let e = parse_job("CREATE JOB j AS SELECT nope(1) FROM t").unwrap_err();
        assert_eq!(e.to_string(), "unknown function nope at line 1, column 24");
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn interval_texts() {
        assert_eq!(interval_text_ms("1 minute"), Some(60_000));
        assert_eq!(interval_text_ms("1m30s"), Some(90_000));
        assert_eq!(interval_text_ms("-2 hours"), Some(-7_200_000));
        assert_eq!(interval_text_ms("5"), Some(5_000));
        assert_eq!(interval_text_ms("1 day, 2 hours"), Some(93_600_000));
        assert_eq!(interval_text_ms(""), None);
        assert_eq!(interval_text_ms("minute"), None);
        assert_eq!(interval_text_ms("1e300 days"), None);
        assert_eq!(interval_text_ms("1 month"), None);
        assert_eq!(parse_json_path("$.a['b c'][2]"), Some(vec!["a".into(), "b c".into(), "2".into()]));
        assert_eq!(parse_json_path("a.b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(parse_json_path("$"), Some(vec![]));
        assert_eq!(parse_json_path("$a"), None);
        assert_eq!(parse_json_path("$[x]"), None);
    }

    #[test]
    fn garbage_never_panics() {
        let pieces = [
            "CREATE",
            "JOB",
            "j",
            "WITH",
            "(",
            ")",
            "=",
            "'x'",
            "AS",
            "SELECT",
            "INSERT",
            "INTO",
            "FROM",
            "t",
            "WHERE",
            "GROUP",
            "BY",
            "TUMBLE",
            "HOP",
            "SESSION",
            "count",
            "(*)",
            ",",
            "a",
            "b.c",
            "1",
            "-",
            "+",
            "INTERVAL",
            "'1'",
            "MINUTE",
            "HAVING",
            "CASE",
            "WHEN",
            "THEN",
            "END",
            "::",
            "int",
            "NULL",
            "LIKE",
            "'%'",
            "\"q\"",
            ";",
            "[",
            "]",
            "->>",
            "DISTINCT",
            "OVER",
            "window_start",
            "avg",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..3000 {
            let mut sql = String::from("CREATE JOB j AS SELECT ");
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            for i in 0..len {
                let pick = (state.rotate_left(i as u32 * 5) % pieces.len() as u64) as usize;
                sql.push_str(pieces[pick]);
                sql.push(' ');
            }
            if let Err(e) = parse_job(&sql) {
                assert!(e.line >= 1 && e.column >= 1, "{sql}: {e}");
                assert!(!e.message.is_empty(), "{sql}");
            }
        }
    }
}
