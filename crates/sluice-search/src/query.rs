//! Running a search over a topic's partitions: parse, filter by time, collect (newest first or by score), count,
//! facet, highlight, page.
//!
//! Newest-first order is `(event time, partition, offset)` descending, a total order, so a cursor is just the
//! last hit's triple and the next page is everything strictly below it. Partitions are disjoint in time, so the
//! search walks them newest first and stops once a page is full (counts and facets still visit every partition
//! in the range). Score order pages by position. Every collector checks a deadline and stops working past it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Map, Value, json};
use sluice_config::FieldKind;
use sluice_sink::search::{SearchRequest, SortOrder};
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::schema::Value as _;
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, TantivyDocument, Term};

use crate::error::SearchError;
use crate::index::TopicIndex;
use crate::schema::{DefinedField, IndexSchema};
use tantivy::query_grammar::{Delimiter, Occur as GrammarOccur, UserInputAst, UserInputLeaf};

/// Values shown per facet field.
const FACET_SIZE: usize = 10;
/// Deepest hit score order pages reach (Elasticsearch's `max_result_window`): each page collects every hit
/// before it. Newest-first order pages without limit.
pub const MAX_SCORE_WINDOW: usize = 10_000;
/// Characters of one highlight fragment.
const FRAGMENT_CHARS: usize = 160;

/// The sort key of newest-first order.
type TimeKey = (i64, u32, u64);

/// Parses the user's query; a syntax error names the position (a character index, from 0) and what is wrong there.
pub fn parse(schema: &IndexSchema, q: &str) -> Result<Box<dyn Query>, SearchError> {
    let q = q.trim();
    if q.is_empty() || q == "*" {
        return Ok(Box::new(AllQuery));
    }
    let Ok(ast) = tantivy::query_grammar::parse_query(q) else {
        let (_, errors) = tantivy::query_grammar::parse_query_lenient(q);
        let msg = match errors.first() {
            Some(e) => {
                let pos = q[..e.pos.min(q.len())].chars().count();
                format!("syntax error in query at position {pos}: {}", e.message.to_lowercase())
            }
            None => "syntax error in query".to_string(),
        };
        return Err(SearchError::InvalidQuery(msg));
    };
    let mut parser = QueryParser::new(schema.schema.clone(), schema.default_fields(), TokenizerManager::default());
    parser.set_conjunction_by_default();
    parser.allow_regexes();
    parser
        .build_query_from_user_input_ast(wildcards(schema, ast))
        .map_err(|e| SearchError::InvalidQuery(query_error(q, e)))
}

/// Rewrites wildcard words (`time*`, `ti?e`, `*out`) into regular expressions over the field they name, or over
/// every default field: tantivy's grammar has regexes (`field:/re/`) but takes a bare `*` in a word literally.
fn wildcards(schema: &IndexSchema, ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(cs) => {
            UserInputAst::Clause(cs.into_iter().map(|(o, a)| (o, wildcards(schema, a))).collect())
        }
        UserInputAst::Boost(a, b) => UserInputAst::Boost(Box::new(wildcards(schema, *a)), b),
        UserInputAst::Leaf(leaf) => match *leaf {
            UserInputLeaf::Literal(lit)
                if lit.delimiter == Delimiter::None
                    && (lit.prefix || lit.phrase.contains(['*', '?']))
                    && !lit.phrase.contains(char::is_whitespace) =>
            {
                let fields: Vec<&DefinedField> = match &lit.field_name {
                    Some(f) => schema.field(f).into_iter().collect(),
                    None => {
                        let d = schema.default_fields();
                        schema.fields.iter().filter(|f| d.contains(&f.field)).collect()
                    }
                };
                if fields.is_empty() || fields.iter().any(|f| matches!(f.kind, FieldKind::Number | FieldKind::Time)) {
                    return UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(lit)));
                }
                let regex = |f: &DefinedField| {
                    // Text analyzers that lowercase index lowercased tokens; keywords keep the value as it is.
                    let lower =
                        f.kind == FieldKind::Text && !matches!(f.analyzer.as_deref(), Some("raw" | "whitespace"));
                    let word = if lower { lit.phrase.to_lowercase() } else { lit.phrase.clone() };
                    let mut p = String::new();
                    for c in word.chars() {
                        match c {
                            '?' => p.push('.'),
                            '*' => p.push_str(".*"),
                            c if "\\.+()|[]{}^$#&-~\"<>@".contains(c) => {
                                p.push('\\');
                                p.push(c);
                            }
                            c => p.push(c),
                        }
                    }
                    if lit.prefix {
                        p.push_str(".*");
                    }
                    UserInputAst::Leaf(Box::new(UserInputLeaf::Regex { field: Some(f.path.clone()), pattern: p }))
                };
                if let [one] = fields.as_slice() {
                    regex(one)
                } else {
                    UserInputAst::Clause(fields.iter().map(|f| (Some(GrammarOccur::Should), regex(f))).collect())
                }
            }
            other => UserInputAst::Leaf(Box::new(other)),
        },
    }
}

fn query_error(q: &str, e: tantivy::query::QueryParserError) -> String {
    use tantivy::query::QueryParserError as E;
    let at = |needle: &str| q.find(needle).map(|b| q[..b].chars().count());
    match &e {
        E::FieldDoesNotExist(f) => match at(&format!("{f}:")) {
            Some(p) => format!("unknown field `{f}` at position {p} (fields: see GET /v1/topics/{{topic}}/index)"),
            None => format!("unknown field `{f}`"),
        },
        E::FieldNotIndexed(f) => format!("field `{f}` is not indexed"),
        E::NoDefaultFieldDeclared => "the index has no text or keyword field to search without `field:`".into(),
        E::AllButQueryForbidden => "a query of only excluded terms (NOT ...) matches nothing; add a term".into(),
        _ => {
            let m = e.to_string();
            let mut c = m.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => m,
            }
        }
    }
}

/// Runs `req` over `index`; `deadline` bounds the work.
pub fn run(index: &TopicIndex, req: &SearchRequest, deadline: Instant) -> Result<Value, SearchError> {
    let schema = &index.schema;
    let user = parse(schema, &req.query)?;
    for f in &req.facets {
        match schema.field(f) {
            Some(d) if d.facet => {}
            Some(_) => {
                return Err(SearchError::InvalidQuery(format!(
                    "facet field `{f}` keeps no exact values (keyword fields, or text fields with \"keyword\": true)"
                )));
            }
            None => return Err(SearchError::InvalidQuery(format!("unknown facet field `{f}`"))),
        }
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, user.box_clone())];
    if req.from.is_some() || req.to.is_some() {
        let lo = req.from.map_or(Bound::Unbounded, |f| Bound::Included(Term::from_field_i64(schema.ts, f)));
        let hi = req.to.map_or(Bound::Unbounded, |t| Bound::Excluded(Term::from_field_i64(schema.ts, t)));
        clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
    }
    let query = BooleanQuery::new(clauses);
    let parts = index.partitions(req.from, req.to);
    let timed_out = Arc::new(AtomicBool::new(false));
    let budget_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
    let check = |timed_out: &AtomicBool| {
        if timed_out.load(Ordering::Relaxed) || Instant::now() > deadline {
            Err(SearchError::Timeout(budget_ms))
        } else {
            Ok(())
        }
    };

    let facet_fields: Vec<String> = req.facets.clone();
    let mut total = 0u64;
    let mut facets: Vec<HashMap<String, u64>> = vec![HashMap::new(); facet_fields.len()];
    // (partition index, key or score, doc)
    let mut hits: Vec<(usize, HitKey, DocAddress)> = Vec::new();
    let before = match (req.sort, req.cursor.as_deref()) {
        (SortOrder::Time, Some(c)) => Some(parse_time_cursor(c)?),
        _ => None,
    };
    let skip = match (req.sort, req.cursor.as_deref()) {
        (SortOrder::Score, Some(c)) => parse_score_cursor(c)?,
        _ => 0,
    };
    let want = req.limit + 1;
    // One searcher per partition for the whole request: a refresh in between must not move the documents found.
    let searchers: Vec<tantivy::Searcher> = parts.iter().map(|p| p.reader.searcher()).collect();
    for (pi, searcher) in searchers.iter().enumerate() {
        check(&timed_out)?;
        let need_top = match req.sort {
            SortOrder::Time => hits.len() < want,
            SortOrder::Score => true,
        };
        let gather = Gather {
            top: if need_top && req.sort == SortOrder::Time { want } else { 0 },
            before,
            facets: facet_fields.clone(),
            deadline,
            timed_out: timed_out.clone(),
        };
        let fruit = searcher.search(&query, &gather)?;
        check(&timed_out)?;
        total += fruit.count;
        for (i, m) in fruit.facets.into_iter().enumerate() {
            for (v, n) in m {
                *facets[i].entry(v).or_default() += n;
            }
        }
        match req.sort {
            SortOrder::Time => {
                for (k, d) in fruit.top {
                    if hits.len() < want {
                        hits.push((pi, HitKey::Time(k), d));
                    }
                }
            }
            SortOrder::Score => {
                let top = Deadline {
                    inner: TopDocs::with_limit(skip + want).order_by_score(),
                    deadline,
                    timed_out: timed_out.clone(),
                };
                for (s, d) in searcher.search(&query, &top)? {
                    hits.push((pi, HitKey::Score(s), d));
                }
                check(&timed_out)?;
            }
        }
    }
    if req.sort == SortOrder::Score {
        hits.sort_by(|a, b| b.1.score().total_cmp(&a.1.score()));
        hits = hits.into_iter().skip(skip).take(want).collect();
    }
    let more = hits.len() > req.limit && (req.sort == SortOrder::Time || skip + req.limit < MAX_SCORE_WINDOW);
    hits.truncate(req.limit);
    let next_cursor = if more {
        match hits.last() {
            Some((_, HitKey::Time((ts, p, o)), _)) => Some(format!("t{ts}.{p}.{o}")),
            Some((_, HitKey::Score(_), _)) => Some(format!("s{}", skip + req.limit)),
            None => None,
        }
    } else {
        None
    };

    // Fetch the stored events and highlight them, per partition.
    let text_fields: Vec<_> = schema.fields.iter().filter(|f| f.kind == FieldKind::Text).collect();
    let mut generators: HashMap<usize, Vec<(String, SnippetGenerator)>> = HashMap::new();
    // Stored events are read in index order (each compressed block is decoded once), then put back in hit order.
    let mut order: Vec<usize> = (0..hits.len()).collect();
    order.sort_by_key(|&i| (hits[i].0, hits[i].2.segment_ord, hits[i].2.doc_id));
    let mut events: Vec<Value> = vec![Value::Null; hits.len()];
    for (n, &i) in order.iter().enumerate() {
        if n % 256 == 0 {
            check(&timed_out)?;
        }
        let (pi, _, addr) = &hits[i];
        let doc: TantivyDocument = searchers[*pi].doc(*addr)?;
        let source = doc.get_first(schema.source).and_then(|v| v.as_bytes()).unwrap_or_default();
        events[i] = serde_json::from_slice(source).unwrap_or(Value::Null);
    }
    let mut out = Vec::with_capacity(hits.len());
    for ((pi, key, addr), event) in hits.iter().zip(events) {
        let (ts, partition, offset) = match key {
            HitKey::Time((ts, p, o)) => (*ts, *p as u64, *o),
            HitKey::Score(_) => {
                let ff = searchers[*pi].segment_reader(addr.segment_ord).fast_fields();
                (
                    ff.i64(crate::schema::TS)?.first(addr.doc_id).unwrap_or(0),
                    ff.u64(crate::schema::PARTITION)?.first(addr.doc_id).unwrap_or(0),
                    ff.u64(crate::schema::OFFSET)?.first(addr.doc_id).unwrap_or(0),
                )
            }
        };
        let searcher = &searchers[*pi];
        let mut hit = Map::new();
        hit.insert("id".into(), json!(format!("{}/{partition}/{offset}", index.topic)));
        hit.insert("partition".into(), json!(partition));
        hit.insert("offset".into(), json!(offset));
        hit.insert("timestamp".into(), json!(ts));
        if let HitKey::Score(s) = key {
            hit.insert("score".into(), json!(s));
        }
        if req.highlight && !text_fields.is_empty() && !matches!(req.query.trim(), "" | "*") {
            if !generators.contains_key(pi) {
                let mut gens = Vec::new();
                for f in &text_fields {
                    let mut g = SnippetGenerator::create(searcher, &*user, f.field)?;
                    g.set_max_num_chars(FRAGMENT_CHARS);
                    gens.push((f.path.clone(), g));
                }
                generators.insert(*pi, gens);
            }
            let mut hl = Map::new();
            for (path, g) in &generators[pi] {
                let Some(v) = crate::schema::lookup(&event, path) else { continue };
                let texts: Vec<String> = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                    _ => continue,
                };
                let mut frags = Vec::new();
                for t in texts {
                    let mut s = g.snippet(&t);
                    if !s.highlighted().is_empty() {
                        s.set_snippet_prefix_postfix("<em>", "</em>");
                        frags.push(Value::String(s.to_html()));
                    }
                }
                if !frags.is_empty() {
                    hl.insert(path.clone(), Value::Array(frags));
                }
            }
            hit.insert("highlights".into(), Value::Object(hl));
        }
        hit.insert("event".into(), event);
        out.push(Value::Object(hit));
    }
    let mut answer = Map::new();
    answer.insert("hits".into(), Value::Array(out));
    answer.insert("total".into(), json!(total));
    answer.insert("next_cursor".into(), next_cursor.map_or(Value::Null, Value::String));
    if !facet_fields.is_empty() {
        let mut f = Map::new();
        for (name, counts) in facet_fields.iter().zip(facets) {
            let mut v: Vec<(String, u64)> = counts.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(FACET_SIZE);
            f.insert(
                name.clone(),
                v.into_iter().map(|(value, count)| json!({"value": value, "count": count})).collect(),
            );
        }
        answer.insert("facets".into(), Value::Object(f));
    }
    Ok(Value::Object(answer))
}

#[derive(Debug, Clone, Copy)]
enum HitKey {
    Time(TimeKey),
    Score(Score),
}

impl HitKey {
    fn score(&self) -> f32 {
        match self {
            HitKey::Score(s) => *s,
            HitKey::Time(_) => 0.0,
        }
    }
}

fn parse_time_cursor(c: &str) -> Result<TimeKey, SearchError> {
    let bad = || SearchError::InvalidQuery(format!("invalid cursor `{c}` (pass a next_cursor of the same search)"));
    let rest = c.strip_prefix('t').ok_or_else(bad)?;
    let mut it = rest.splitn(3, '.');
    let (Some(a), Some(b), Some(d)) = (it.next(), it.next(), it.next()) else { return Err(bad()) };
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?))
}

fn parse_score_cursor(c: &str) -> Result<usize, SearchError> {
    let skip: usize = c.strip_prefix('s').and_then(|n| n.parse().ok()).ok_or_else(|| {
        SearchError::InvalidQuery(format!("invalid cursor `{c}` (pass a next_cursor of the same search)"))
    })?;
    if skip >= MAX_SCORE_WINDOW {
        return Err(SearchError::InvalidQuery(format!(
            "score order pages through the best {MAX_SCORE_WINDOW} hits at most; sort by time to page further"
        )));
    }
    Ok(skip)
}

/// Counts matches, keeps the newest `top` below `before`, and counts facet values.
struct Gather {
    top: usize,
    before: Option<TimeKey>,
    facets: Vec<String>,
    deadline: Instant,
    timed_out: Arc<AtomicBool>,
}

struct GatherFruit {
    count: u64,
    top: Vec<(TimeKey, DocAddress)>,
    facets: Vec<HashMap<String, u64>>,
}

struct GatherSegment {
    seg: SegmentOrdinal,
    top: usize,
    before: Option<TimeKey>,
    ts: Column<i64>,
    partition: Column<u64>,
    offset: Column<u64>,
    heap: BinaryHeap<Reverse<(TimeKey, DocId)>>,
    facets: Vec<Option<(StrColumn, HashMap<u64, u64>)>>,
    count: u64,
    budget: Budget,
}

/// Stops a collector's work once the deadline passed, checking the clock every 4096 documents.
struct Budget {
    deadline: Instant,
    timed_out: Arc<AtomicBool>,
    seen: u32,
    stopped: bool,
}

impl Budget {
    fn new(deadline: Instant, timed_out: &Arc<AtomicBool>) -> Budget {
        let stopped = Instant::now() > deadline;
        if stopped {
            timed_out.store(true, Ordering::Relaxed);
        }
        Budget { deadline, timed_out: timed_out.clone(), seen: 0, stopped }
    }

    /// False past the deadline: the document is not collected.
    fn admit(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        self.seen = self.seen.wrapping_add(1);
        if self.seen.is_multiple_of(4096) && Instant::now() > self.deadline {
            self.timed_out.store(true, Ordering::Relaxed);
            self.stopped = true;
            return false;
        }
        true
    }
}

impl Collector for Gather {
    type Fruit = GatherFruit;
    type Child = GatherSegment;

    fn for_segment(&self, seg: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<GatherSegment> {
        let ff = reader.fast_fields();
        let mut facets = Vec::with_capacity(self.facets.len());
        for f in &self.facets {
            facets.push(ff.str(f)?.map(|c| (c, HashMap::new())));
        }
        Ok(GatherSegment {
            seg,
            top: self.top,
            before: self.before,
            ts: ff.i64(crate::schema::TS)?,
            partition: ff.u64(crate::schema::PARTITION)?,
            offset: ff.u64(crate::schema::OFFSET)?,
            heap: BinaryHeap::with_capacity(self.top + 1),
            facets,
            count: 0,
            budget: Budget::new(self.deadline, &self.timed_out),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<GatherFruit>) -> tantivy::Result<GatherFruit> {
        let mut count = 0;
        let mut top = Vec::new();
        let mut facets = vec![HashMap::new(); self.facets.len()];
        for f in fruits {
            count += f.count;
            top.extend(f.top);
            for (i, m) in f.facets.into_iter().enumerate() {
                for (k, n) in m {
                    *facets[i].entry(k).or_default() += n;
                }
            }
        }
        top.sort_by_key(|t| Reverse(t.0));
        top.truncate(self.top);
        Ok(GatherFruit { count, top, facets })
    }
}

impl GatherSegment {
    fn count_facets(&mut self, doc: DocId) {
        for (col, counts) in self.facets.iter_mut().flatten() {
            for ord in col.term_ords(doc) {
                *counts.entry(ord).or_default() += 1;
            }
        }
    }
}

impl SegmentCollector for GatherSegment {
    type Fruit = GatherFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if !self.budget.admit() {
            return;
        }
        self.count += 1;
        if self.top > 0 {
            // Most documents lose on their time alone: read partition and offset only for candidates.
            let ts = self.ts.first(doc).unwrap_or(i64::MIN);
            let beaten = self.heap.len() >= self.top && self.heap.peek().is_some_and(|Reverse((min, _))| ts < min.0);
            let past_cursor = self.before.is_some_and(|b| ts > b.0);
            if beaten || past_cursor {
                return self.count_facets(doc);
            }
            let key = (ts, self.partition.first(doc).unwrap_or(0) as u32, self.offset.first(doc).unwrap_or(0));
            if self.before.is_none_or(|b| key < b) {
                if self.heap.len() < self.top {
                    self.heap.push(Reverse((key, doc)));
                } else if let Some(Reverse((min, _))) = self.heap.peek()
                    && key > *min
                {
                    self.heap.pop();
                    self.heap.push(Reverse((key, doc)));
                }
            }
        }
        self.count_facets(doc);
    }

    fn harvest(self) -> GatherFruit {
        let seg = self.seg;
        let top = self.heap.into_iter().map(|Reverse((k, d))| (k, DocAddress::new(seg, d))).collect();
        let facets = self
            .facets
            .into_iter()
            .map(|f| {
                let mut out = HashMap::new();
                if let Some((col, counts)) = f {
                    let mut s = String::new();
                    for (ord, n) in counts {
                        s.clear();
                        if col.ord_to_str(ord, &mut s).unwrap_or(false) {
                            out.insert(s.clone(), n);
                        }
                    }
                }
                out
            })
            .collect();
        GatherFruit { count: self.count, top, facets }
    }
}

/// Wraps a collector so that it stops collecting past a deadline (and says so).
struct Deadline<C> {
    inner: C,
    deadline: Instant,
    timed_out: Arc<AtomicBool>,
}

struct DeadlineSegment<S> {
    inner: S,
    budget: Budget,
}

impl<C: Collector> Collector for Deadline<C> {
    type Fruit = C::Fruit;
    type Child = DeadlineSegment<C::Child>;

    fn for_segment(&self, seg: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(DeadlineSegment {
            inner: self.inner.for_segment(seg, reader)?,
            budget: Budget::new(self.deadline, &self.timed_out),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(&self, fruits: Vec<<Self::Child as SegmentCollector>::Fruit>) -> tantivy::Result<Self::Fruit> {
        self.inner.merge_fruits(fruits)
    }
}

impl<S: SegmentCollector> SegmentCollector for DeadlineSegment<S> {
    type Fruit = S::Fruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        if self.budget.admit() {
            self.inner.collect(doc, score);
        }
    }

    fn harvest(self) -> S::Fruit {
        self.inner.harvest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(parse_time_cursor("t-5.3.17").unwrap(), (-5, 3, 17));
        assert_eq!(parse_score_cursor("s40").unwrap(), 40);
        for bad in ["", "t1.2", "x1.2.3", "t1.2.x", "s", "sfoo"] {
            assert!(parse_time_cursor(bad).is_err() || bad.starts_with('s'), "{bad}");
        }
        assert!(parse_score_cursor("t1.2.3").is_err());
        assert!(parse_score_cursor("s1000000000000").unwrap_err().to_string().contains("best 10000 hits"));
    }
}
