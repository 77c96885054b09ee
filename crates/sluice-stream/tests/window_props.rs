//! Property tests of window assignment and session merging against brute-force recomputation.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sluice_stream::{SessionChange, SessionSet, Window, WindowSpec};

/// Every aligned window of (size, slide) containing ts, by scanning all starts near ts (i128: no overflow).
fn brute_force(ts: i64, size: i64, slide: i64) -> Vec<(i128, i128)> {
    let (ts, size, slide) = (i128::from(ts), i128::from(size), i128::from(slide));
    let mut out = Vec::new();
    let mut start = ts - size - slide;
    start -= start.rem_euclid(slide);
    while start <= ts {
        if start <= ts && ts < start + size {
            out.push((start, start + size));
        }
        start += slide;
    }
    out
}

fn spec() -> impl Strategy<Value = (i64, i64)> {
    (1i64..60).prop_flat_map(|size| (Just(size), 1..=size))
}

proptest! {
    #[test]
    fn assignment_matches_brute_force((size, slide) in spec(), ts in -5_000i64..5_000, tumble in any::<bool>()) {
        let (spec, slide) = if tumble { (WindowSpec::tumble(size).unwrap(), size) } else { (WindowSpec::hop(size, slide).unwrap(), slide) };
        let windows: Vec<Window> = spec.assign(ts).unwrap().collect();
        for w in &windows {
            prop_assert!(w.contains(ts), "{w:?} does not contain {ts}");
            prop_assert_eq!(w.end - w.start, size);
            prop_assert_eq!(w.start.rem_euclid(slide), 0, "{:?} not aligned", w);
        }
        prop_assert!(windows.windows(2).all(|p| p[0].start < p[1].start));
        if tumble {
            prop_assert_eq!(windows.len(), 1);
        }
        if size % slide == 0 {
            prop_assert_eq!(windows.len() as i64, size / slide);
        }
        let expected = brute_force(ts, size, slide);
        let got: Vec<(i128, i128)> = windows.iter().map(|w| (i128::from(w.start), i128::from(w.end))).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn assignment_near_the_limits_is_exact_or_refused(
        (size, slide) in spec(),
        offset in 0i64..200,
        high in any::<bool>(),
    ) {
        let ts = if high { i64::MAX - offset } else { i64::MIN + offset };
        let spec = WindowSpec::hop(size, slide).unwrap();
        let expected = brute_force(ts, size, slide);
        let representable = expected.iter().all(|&(s, e)| s >= i128::from(i64::MIN) && e <= i128::from(i64::MAX));
        match spec.assign(ts) {
            Ok(it) => {
                prop_assert!(representable);
                let got: Vec<(i128, i128)> = it.map(|w| (i128::from(w.start), i128::from(w.end))).collect();
                prop_assert_eq!(got, expected);
            }
            Err(_) => prop_assert!(!representable),
        }
    }

    #[test]
    fn sessions_match_brute_force(gap in 1i64..20, ts in prop::collection::vec(-150i64..150, 0..80)) {
        let mut set = SessionSet::new(gap).unwrap();
        // What a caller keeps: events per session, maintained only from the reported changes.
        let mut state: BTreeMap<Window, Vec<i64>> = BTreeMap::new();
        for &t in &ts {
            let change = set.insert(t).unwrap();
            match &change {
                SessionChange::Created(w) => {
                    prop_assert!(state.insert(*w, vec![t]).is_none());
                }
                SessionChange::Unchanged(w) => state.get_mut(w).expect("unchanged session exists").push(t),
                SessionChange::Extended { from, into } => {
                    prop_assert_ne!(from, into);
                    let mut events = state.remove(from).expect("extended session exists");
                    events.push(t);
                    state.insert(*into, events);
                }
                SessionChange::Merged { from, into } => {
                    prop_assert!(from.len() >= 2);
                    prop_assert!(from.windows(2).all(|p| p[0].end < p[1].start));
                    let mut events = vec![t];
                    for w in from {
                        events.extend(state.remove(w).expect("merged session exists"));
                    }
                    state.insert(*into, events);
                }
            }
            prop_assert!(change.session().contains(t));
            // Each session is exactly [first event, last event + gap).
            for (w, events) in &state {
                let lo = *events.iter().min().unwrap();
                let hi = *events.iter().max().unwrap();
                prop_assert_eq!(*w, Window::new(lo, hi + gap));
            }
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), state.keys().copied().collect::<Vec<_>>());
        }
        // Brute force from all timestamps: sort, then chain events at most `gap` apart.
        let mut sorted = ts.clone();
        sorted.sort_unstable();
        let mut expected: Vec<Window> = Vec::new();
        for t in sorted {
            match expected.last_mut() {
                Some(last) if t <= last.end => last.end = last.end.max(t + gap),
                _ => expected.push(Window::new(t, t + gap)),
            }
        }
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), expected.clone());
        let total: usize = state.values().map(Vec::len).sum();
        prop_assert_eq!(total, ts.len());
    }

    #[test]
    fn close_before_splits_at_the_watermark(
        gap in 1i64..20,
        ts in prop::collection::vec(-150i64..150, 0..60),
        watermark in -200i64..200,
    ) {
        let mut set = SessionSet::new(gap).unwrap();
        for &t in &ts {
            set.insert(t).unwrap();
        }
        let all: Vec<Window> = set.iter().collect();
        let closed = set.close_before(watermark);
        let (done, open): (Vec<Window>, Vec<Window>) = all.into_iter().partition(|w| w.end <= watermark);
        prop_assert_eq!(closed, done);
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), open);
    }
}
