//! Event-time windows: assignment of tumbling and hopping windows, and per-key session merging.
//!
//! All windows are half-open `[start, end)` over `i64` milliseconds and aligned to the Unix epoch (as Flink's
//! assigners with offset 0): a hop window starts at a multiple of its slide, so every task and every restart
//! assigns the same windows. Timestamps before 1970 (negative) are handled with Euclidean remainders.
//!
//! Overflow: a timestamp whose windows would start below `i64::MIN` or end above `i64::MAX` is refused with
//! [`StreamError::TimestampOutOfRange`] (never saturated, since a saturated window would not be aligned or would
//! not have the spec's length). This only concerns timestamps within one window size of the `i64` limits,
//! about 292 million years away from the epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::StreamError;

/// Most windows one event may belong to under a hop (`size / slide`).
pub const MAX_HOP_WINDOWS: i64 = 1_000;

/// A half-open event-time interval `[start, end)` in milliseconds; `start < end` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn new(start: i64, end: i64) -> Self {
        debug_assert!(start < end, "empty window [{start}, {end})");
        Window { start, end }
    }

    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }

    /// The largest timestamp inside the window (`end - 1`), the event time it is emitted at.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Overlapping or touching windows (`[0, 5)` and `[5, 9)`): the sessions that merge.
    pub fn intersects_or_touches(&self, other: &Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// How events are grouped into windows. Build with [`WindowSpec::tumble`], [`WindowSpec::hop`] or
/// [`WindowSpec::session`] (validated), or validate a hand-built value with [`WindowSpec::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size` ms: `[k * size, (k + 1) * size)`.
    Tumble { size: i64 },
    /// Windows of `size` ms starting every `slide` ms; an event belongs to about `size / slide` of them.
    Hop { size: i64, slide: i64 },
    /// Per-key sessions closed by `gap` ms of inactivity; see [`SessionSet`].
    Session { gap: i64 },
}

impl WindowSpec {
    pub fn tumble(size: i64) -> Result<Self, StreamError> {
        let spec = WindowSpec::Tumble { size };
        spec.validate()?;
        Ok(spec)
    }

    pub fn hop(size: i64, slide: i64) -> Result<Self, StreamError> {
        let spec = WindowSpec::Hop { size, slide };
        spec.validate()?;
        Ok(spec)
    }

    pub fn session(gap: i64) -> Result<Self, StreamError> {
        let spec = WindowSpec::Session { gap };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks size > 0, slide > 0, slide <= size (a hop with slide > size would drop events between windows),
    /// gap > 0. Needed for specs built directly or deserialized.
    pub fn validate(&self) -> Result<(), StreamError> {
        match *self {
            WindowSpec::Tumble { size } if size <= 0 => Err(StreamError::InvalidSize { size }),
            WindowSpec::Hop { size, .. } if size <= 0 => Err(StreamError::InvalidSize { size }),
            WindowSpec::Hop { slide, .. } if slide <= 0 => Err(StreamError::InvalidSlide { slide }),
            WindowSpec::Hop { size, slide } if slide > size => Err(StreamError::SlideLargerThanSize { slide, size }),
            // Every event is aggregated into size/slide windows: bound the fan-out one definition can ask for.
            WindowSpec::Hop { size, slide } if size / slide > MAX_HOP_WINDOWS => {
                Err(StreamError::TooManyHopWindows { size, slide, max: MAX_HOP_WINDOWS })
            }
            WindowSpec::Session { gap } if gap <= 0 => Err(StreamError::InvalidGap { gap }),
            _ => Ok(()),
        }
    }

    /// Every window containing `ts`, by ascending start. A tumble gives exactly one; a hop gives
    /// `ceil(size / slide)` or `floor(size / slide)` (exactly `size / slide` when divisible). A session gives its
    /// proto-window `[ts, ts + gap)`, which [`SessionSet::insert`] then merges with the key's other sessions.
    ///
    /// Does not allocate. Errors: an invalid spec, or [`StreamError::TimestampOutOfRange`] when a window
    /// containing `ts` is not representable in `i64` (see the module docs).
    pub fn assign(&self, ts: i64) -> Result<WindowIter, StreamError> {
        self.validate()?;
        let (size, slide) = match *self {
            WindowSpec::Tumble { size } => (size, size),
            WindowSpec::Hop { size, slide } => (size, slide),
            WindowSpec::Session { gap } => {
                let end = ts.checked_add(gap).ok_or(StreamError::TimestampOutOfRange { ts })?;
                return Ok(WindowIter { next_start: ts, remaining: 1, size: end - ts, slide: gap });
            }
        };
        // Computed in i128 so that the bounds can be checked instead of overflowing.
        let (ts128, size128, slide128) = (i128::from(ts), i128::from(size), i128::from(slide));
        let last_start = ts128 - ts128.rem_euclid(slide128);
        // The earliest aligned start with start + size > ts, i.e. start > ts - size.
        let lowest = ts128 - size128 + 1;
        let first_start = lowest + (slide128 - lowest.rem_euclid(slide128)) % slide128;
        if first_start < i128::from(i64::MIN) || last_start + size128 > i128::from(i64::MAX) {
            return Err(StreamError::TimestampOutOfRange { ts });
        }
        let remaining = ((last_start - first_start) / slide128 + 1) as u64;
        Ok(WindowIter { next_start: first_start as i64, remaining, size, slide })
    }
}

/// The windows of one timestamp, from [`WindowSpec::assign`]; ascending by start.
#[derive(Debug, Clone)]
pub struct WindowIter {
    next_start: i64,
    remaining: u64,
    size: i64,
    slide: i64,
}

impl Iterator for WindowIter {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        if self.remaining == 0 {
            return None;
        }
        let start = self.next_start;
        self.remaining -= 1;
        if self.remaining > 0 {
            // In range: the last start was checked in `assign`.
            self.next_start = start + self.slide;
        }
        Some(Window { start, end: start + self.size })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ExactSizeIterator for WindowIter {}

/// What [`SessionSet::insert`] did, so the caller can keep one aggregate state per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// The event fell into an existing session that did not change: add it to that session's state.
    Unchanged(Window),
    /// A new session holding only this event: start a fresh state.
    Created(Window),
    /// One existing session grew (its end moved, or its start moved back): re-key its state from `from` to
    /// `into`, then add the event.
    Extended { from: Window, into: Window },
    /// Two or more existing sessions (ascending, disjoint) were bridged by this event into one: merge all their
    /// states into `into`'s, then add the event.
    Merged { from: Vec<Window>, into: Window },
}

impl SessionChange {
    /// The session that holds the event after the insert.
    pub fn session(&self) -> Window {
        match self {
            SessionChange::Unchanged(w) | SessionChange::Created(w) => *w,
            SessionChange::Extended { into, .. } | SessionChange::Merged { into, .. } => *into,
        }
    }
}

/// The open sessions of one key. Each event at `ts` makes a proto-session `[ts, ts + gap)`; sessions that
/// overlap or touch are merged (as Flink's `TimeWindow.intersects`), so two events at most `gap` apart share a
/// session. Invariant: stored sessions are disjoint and not touching (`a.end < b.start`), hence sorted by both
/// start and end.
///
/// Serialized as `{gap, sessions: [[start, end], ...]}`; deserialization re-checks every invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SessionSetSnapshot", into = "SessionSetSnapshot")]
pub struct SessionSet {
    gap: i64,
    /// start -> end.
    sessions: BTreeMap<i64, i64>,
}

impl SessionSet {
    pub fn new(gap: i64) -> Result<Self, StreamError> {
        WindowSpec::session(gap)?;
        Ok(SessionSet { gap, sessions: BTreeMap::new() })
    }

    pub fn gap(&self) -> i64 {
        self.gap
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Open sessions by ascending start (and end).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Window> + '_ {
        self.sessions.iter().map(|(&start, &end)| Window { start, end })
    }

    /// Adds an event at `ts`, merging every session it overlaps or touches. O(log n + merged).
    /// Errors with [`StreamError::TimestampOutOfRange`] if `ts + gap` overflows (the set is then unchanged).
    /// Lateness is the caller's business: check [`crate::Lateness`] first, or a late event may re-open a
    /// session already emitted by [`SessionSet::close_before`].
    pub fn insert(&mut self, ts: i64) -> Result<SessionChange, StreamError> {
        let end = ts.checked_add(self.gap).ok_or(StreamError::TimestampOutOfRange { ts })?;
        let proto = Window { start: ts, end };
        // Candidates have start <= proto.end; sorted sessions have sorted ends, so walk back until end < ts.
        let mut touched: Vec<Window> = Vec::new();
        let mut single: Option<Window> = None;
        for (&s, &e) in self.sessions.range(..=proto.end).rev() {
            if e < proto.start {
                break;
            }
            let w = Window { start: s, end: e };
            match single.take() {
                None if touched.is_empty() => single = Some(w),
                None => touched.push(w),
                Some(first) => {
                    touched.push(first);
                    touched.push(w);
                }
            }
        }
        if let Some(existing) = single {
            let into = Window { start: existing.start.min(ts), end: existing.end.max(end) };
            if into == existing {
                return Ok(SessionChange::Unchanged(existing));
            }
            self.sessions.remove(&existing.start);
            self.sessions.insert(into.start, into.end);
            return Ok(SessionChange::Extended { from: existing, into });
        }
        if touched.is_empty() {
            self.sessions.insert(proto.start, proto.end);
            return Ok(SessionChange::Created(proto));
        }
        touched.reverse();
        let mut into = proto;
        for w in &touched {
            self.sessions.remove(&w.start);
            into = Window { start: into.start.min(w.start), end: into.end.max(w.end) };
        }
        self.sessions.insert(into.start, into.end);
        Ok(SessionChange::Merged { from: touched, into })
    }

    /// Puts back a session taken from a snapshot of per-session state (the sessions of a key are exactly its
    /// state's windows). Refuses one that is empty or overlaps or touches a session already held.
    pub fn restore(&mut self, w: Window) -> Result<(), StreamError> {
        let corrupt = |reason: String| StreamError::CorruptSnapshot { what: "session set", reason };
        if w.start >= w.end {
            return Err(corrupt(format!("empty session [{}, {})", w.start, w.end)));
        }
        let before = self.sessions.range(..=w.start).next_back().map(|(s, e)| (*s, *e));
        let after = self.sessions.range(w.start..).next().map(|(s, e)| (*s, *e));
        for (s, e) in before.into_iter().chain(after) {
            if s <= w.end && w.start <= e {
                return Err(corrupt(format!("session [{}, {}) overlaps [{s}, {e})", w.start, w.end)));
            }
        }
        self.sessions.insert(w.start, w.end);
        Ok(())
    }

    /// Removes and returns (ascending) every session with `end <= watermark`: complete, since no event before
    /// the watermark can arrive on time to extend it. A session is emitted when the watermark reaches its end.
    pub fn close_before(&mut self, watermark: i64) -> Vec<Window> {
        let mut closed = Vec::new();
        while let Some(entry) = self.sessions.first_entry() {
            if *entry.get() > watermark {
                break;
            }
            let (start, end) = entry.remove_entry();
            closed.push(Window { start, end });
        }
        closed
    }
}

#[derive(Serialize, Deserialize)]
struct SessionSetSnapshot {
    gap: i64,
    sessions: Vec<(i64, i64)>,
}

impl From<SessionSet> for SessionSetSnapshot {
    fn from(set: SessionSet) -> Self {
        SessionSetSnapshot { gap: set.gap, sessions: set.sessions.into_iter().collect() }
    }
}

impl TryFrom<SessionSetSnapshot> for SessionSet {
    type Error = StreamError;

    fn try_from(snapshot: SessionSetSnapshot) -> Result<Self, StreamError> {
        let corrupt = |reason: String| StreamError::CorruptSnapshot { what: "session set", reason };
        let mut set = SessionSet::new(snapshot.gap).map_err(|e| corrupt(e.to_string()))?;
        let mut previous_end: Option<i64> = None;
        for (start, end) in snapshot.sessions {
            // A session spans at least one gap: [first event, last event + gap).
            if end.checked_sub(start).is_none_or(|len| len < snapshot.gap) {
                return Err(corrupt(format!("session [{start}, {end}) is shorter than the gap {}", snapshot.gap)));
            }
            if previous_end.is_some_and(|prev| prev >= start) {
                return Err(corrupt(format!("session [{start}, {end}) overlaps or touches the previous one")));
            }
            previous_end = Some(end);
            set.sessions.insert(start, end);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_rebuilds_sessions_and_refuses_overlaps() {
        let mut s = SessionSet::new(10).unwrap();
        s.restore(Window::new(0, 30)).unwrap();
        s.restore(Window::new(50, 60)).unwrap();
        assert!(s.restore(Window::new(30, 40)).is_err(), "touching");
        assert!(s.restore(Window::new(55, 70)).is_err(), "overlapping");
        assert!(s.restore(Window { start: 5, end: 5 }).is_err(), "empty");
        // Restored sessions merge like inserted ones.
        assert_eq!(
            s.insert(25).unwrap(),
            SessionChange::Extended { from: Window::new(0, 30), into: Window::new(0, 35) }
        );
    }

    #[test]
    fn validation_names_the_value() {
        assert_eq!(WindowSpec::tumble(0).unwrap_err().to_string(), "window size must be > 0, got 0");
        assert_eq!(WindowSpec::hop(10, -1).unwrap_err().to_string(), "window slide must be > 0, got -1");
        assert_eq!(
            WindowSpec::hop(10, 11).unwrap_err().to_string(),
            "window slide must be <= size, got slide 11 and size 10"
        );
        assert_eq!(WindowSpec::session(0).unwrap_err().to_string(), "session gap must be > 0, got 0");
        assert!(WindowSpec::Hop { size: 5, slide: 6 }.assign(1).is_err());
    }

    #[test]
    fn negative_timestamps_align_to_the_epoch() {
        let spec = WindowSpec::tumble(10).unwrap();
        assert_eq!(spec.assign(-1).unwrap().collect::<Vec<_>>(), vec![Window::new(-10, 0)]);
        assert_eq!(spec.assign(-10).unwrap().collect::<Vec<_>>(), vec![Window::new(-10, 0)]);
        assert_eq!(spec.assign(0).unwrap().collect::<Vec<_>>(), vec![Window::new(0, 10)]);
        let hop = WindowSpec::hop(10, 5).unwrap();
        assert_eq!(hop.assign(-3).unwrap().collect::<Vec<_>>(), vec![Window::new(-10, 0), Window::new(-5, 5)]);
    }

    #[test]
    fn extremes_are_refused_not_wrapped() {
        let spec = WindowSpec::tumble(1000).unwrap();
        assert_eq!(spec.assign(i64::MIN).unwrap_err(), StreamError::TimestampOutOfRange { ts: i64::MIN });
        assert_eq!(spec.assign(i64::MAX).unwrap_err(), StreamError::TimestampOutOfRange { ts: i64::MAX });
        // A power-of-two size divides i64::MIN, so the first window is representable.
        let w: Vec<_> = WindowSpec::tumble(1024).unwrap().assign(i64::MIN).unwrap().collect();
        assert_eq!(w, vec![Window::new(i64::MIN, i64::MIN + 1024)]);
        // A fan-out beyond MAX_HOP_WINDOWS windows per event is refused up front.
        assert!(matches!(WindowSpec::hop(i64::MAX, 1), Err(StreamError::TooManyHopWindows { .. })));
        let hop = WindowSpec::hop(i64::MAX, i64::MAX / MAX_HOP_WINDOWS).unwrap();
        assert!(hop.assign(0).is_ok_and(|it| it.len() as i64 >= MAX_HOP_WINDOWS));
        assert!(hop.assign(i64::MAX).is_err());
        assert!(SessionSet::new(10).unwrap().insert(i64::MAX - 5).is_err());
        assert!(WindowSpec::session(10).unwrap().assign(i64::MAX - 5).is_err());
    }

    #[test]
    fn session_changes() {
        let mut set = SessionSet::new(10).unwrap();
        assert_eq!(set.insert(0).unwrap(), SessionChange::Created(Window::new(0, 10)));
        assert_eq!(
            set.insert(5).unwrap(),
            SessionChange::Extended { from: Window::new(0, 10), into: Window::new(0, 15) }
        );
        assert_eq!(set.insert(3).unwrap(), SessionChange::Unchanged(Window::new(0, 15)));
        assert_eq!(set.insert(30).unwrap(), SessionChange::Created(Window::new(30, 40)));
        // 15 touches [0, 15) and its proto-session [15, 25) does not reach 30.
        assert_eq!(
            set.insert(15).unwrap(),
            SessionChange::Extended { from: Window::new(0, 15), into: Window::new(0, 25) }
        );
        assert_eq!(
            set.insert(20).unwrap(),
            SessionChange::Merged { from: vec![Window::new(0, 25), Window::new(30, 40)], into: Window::new(0, 40) }
        );
        assert_eq!(set.close_before(39), vec![]);
        assert_eq!(set.close_before(40), vec![Window::new(0, 40)]);
        assert!(set.is_empty());
    }

    #[test]
    fn session_snapshot_is_validated() {
        let mut set = SessionSet::new(10).unwrap();
        for ts in [0, 100, 5, 300] {
            set.insert(ts).unwrap();
        }
        let json = serde_json_like(&set);
        assert_eq!(json.gap, 10);
        let back = SessionSet::try_from(json).unwrap();
        assert_eq!(back, set);
        let overlapping = SessionSetSnapshot { gap: 10, sessions: vec![(0, 10), (10, 20)] };
        assert!(SessionSet::try_from(overlapping).is_err());
        let short = SessionSetSnapshot { gap: 10, sessions: vec![(0, 5)] };
        assert!(SessionSet::try_from(short).is_err());
        let bad_gap = SessionSetSnapshot { gap: 0, sessions: vec![] };
        assert!(SessionSet::try_from(bad_gap).is_err());
    }

    fn serde_json_like(set: &SessionSet) -> SessionSetSnapshot {
        SessionSetSnapshot::from(set.clone())
    }
}
