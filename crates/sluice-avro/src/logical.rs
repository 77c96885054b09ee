//! Text forms of Avro logical types: `date`, `time-*`, `timestamp-*` (RFC 3339), `decimal`, `big-decimal`
//! and `uuid`. Parsers return a lowercase problem description on bad input; formatters never fail except
//! where a value is outside what the text form can say (reported, never panicking).

use std::fmt::Write as _;

/// The unit of a time or timestamp value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    pub(crate) fn per_second(self) -> i64 {
        match self {
            Unit::Millis => 1_000,
            Unit::Micros => 1_000_000,
            Unit::Nanos => 1_000_000_000,
        }
    }

    fn digits(self) -> usize {
        match self {
            Unit::Millis => 3,
            Unit::Micros => 6,
            Unit::Nanos => 9,
        }
    }
}

const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A tiny cursor over ASCII text.
struct Text<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Text<'a> {
    fn new(s: &'a str) -> Self {
        Text { s: s.as_bytes(), pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `n` decimal digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let end = self.pos.checked_add(n)?;
        let part = self.s.get(self.pos..end)?;
        let mut v = 0i64;
        for &b in part {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
        }
        self.pos = end;
        Some(v)
    }

    /// A run of 1..=max digits, returned with its length.
    fn digit_run(&mut self, max: usize) -> Option<(i64, usize)> {
        let start = self.pos;
        let mut v = 0i64;
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            if self.pos - start == max {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
            self.pos += 1;
        }
        (self.pos > start).then_some((v, self.pos - start))
    }

    fn done(&self) -> bool {
        self.pos == self.s.len()
    }
}

/// `YYYY-MM-DD` (years outside 0000..=9999 as `+YYYYY` / `-YYYY`) to days since the epoch.
fn parse_date_part(t: &mut Text<'_>) -> Option<i64> {
    let year = match t.peek()? {
        b'+' | b'-' => {
            let neg = t.peek() == Some(b'-');
            t.pos += 1;
            let (y, n) = t.digit_run(12)?;
            if n < 4 {
                return None;
            }
            if neg { -y } else { y }
        }
        _ => t.digits(4)?,
    };
    if !t.eat(b'-') {
        return None;
    }
    let month = t.digits(2)? as u32;
    if !t.eat(b'-') {
        return None;
    }
    let day = t.digits(2)? as u32;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `HH:MM:SS[.fraction]` to (seconds of the day, fraction in units, floored).
fn parse_time_part(t: &mut Text<'_>, unit: Unit) -> Option<(i64, i64)> {
    let h = t.digits(2)?;
    if !t.eat(b':') {
        return None;
    }
    let m = t.digits(2)?;
    if !t.eat(b':') {
        return None;
    }
    let s = t.digits(2)?;
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let mut frac = 0i64;
    if t.eat(b'.') {
        let (v, n) = t.digit_run(9)?;
        // Scale the fraction to the unit; extra digits are dropped (floor, as the value is positive).
        frac = if n <= unit.digits() {
            v * 10i64.pow((unit.digits() - n) as u32)
        } else {
            v / 10i64.pow((n - unit.digits()) as u32)
        };
    }
    Some((h * 3600 + m * 60 + s, frac))
}

pub(crate) fn parse_date(s: &str) -> Result<i32, String> {
    let mut t = Text::new(s);
    let days =
        parse_date_part(&mut t).filter(|_| t.done()).ok_or_else(|| format!("invalid date {s:?} (want YYYY-MM-DD)"))?;
    i32::try_from(days).map_err(|_| format!("date {s:?} out of range"))
}

pub(crate) fn format_date(out: &mut Vec<u8>, days: i64) {
    let mut s = String::with_capacity(12);
    push_date(&mut s, days);
    crate::json::write_str(out, &s);
}

fn push_date(s: &mut String, days: i64) {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let _ = write!(s, "{y:04}-{m:02}-{d:02}");
    } else {
        let _ = write!(s, "{}{:04}-{m:02}-{d:02}", if y < 0 { '-' } else { '+' }, y.unsigned_abs());
    }
}

pub(crate) fn parse_time(s: &str, unit: Unit) -> Result<i64, String> {
    let mut t = Text::new(s);
    let (secs, frac) = parse_time_part(&mut t, unit)
        .filter(|_| t.done())
        .ok_or_else(|| format!("invalid time {s:?} (want HH:MM:SS.{})", "f".repeat(unit.digits())))?;
    Ok(secs * unit.per_second() + frac)
}

/// Time of day; `None` when the value is not within one day.
pub(crate) fn format_time(out: &mut Vec<u8>, v: i64, unit: Unit) -> Option<()> {
    let per = unit.per_second();
    if !(0..SECS_PER_DAY * per).contains(&v) {
        return None;
    }
    let secs = v / per;
    let mut s = String::with_capacity(20);
    let _ = write!(s, "{:02}:{:02}:{:02}.{:0w$}", secs / 3600, secs / 60 % 60, secs % 60, v % per, w = unit.digits());
    crate::json::write_str(out, &s);
    Some(())
}

pub(crate) fn check_time(v: i64, unit: Unit) -> Result<(), String> {
    if (0..SECS_PER_DAY * unit.per_second()).contains(&v) {
        Ok(())
    } else {
        Err(format!("time {v} is not within one day"))
    }
}

/// RFC 3339 to epoch units. A missing offset is accepted only when `local` (a wall-clock time).
pub(crate) fn parse_timestamp(s: &str, unit: Unit, local: bool) -> Result<i64, String> {
    let bad = || format!("invalid timestamp {s:?} (want RFC 3339, e.g. 2024-05-01T12:00:00.000Z)");
    let mut t = Text::new(s);
    let days = parse_date_part(&mut t).ok_or_else(bad)?;
    if !(t.eat(b'T') || t.eat(b't') || t.eat(b' ')) {
        return Err(bad());
    }
    let (secs, frac) = parse_time_part(&mut t, unit).ok_or_else(bad)?;
    let offset = match t.peek() {
        Some(b'Z' | b'z') => {
            t.pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            t.pos += 1;
            let h = t.digits(2).ok_or_else(bad)?;
            if !t.eat(b':') {
                return Err(bad());
            }
            let m = t.digits(2).ok_or_else(bad)?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let off = h * 3600 + m * 60;
            if sign == b'-' { -off } else { off }
        }
        None if local => 0,
        _ => return Err(bad()),
    };
    if !t.done() {
        return Err(bad());
    }
    // i128: the seconds alone may overflow i64 at the edges of the range even when the total fits.
    let total = (i128::from(days) * i128::from(SECS_PER_DAY) + i128::from(secs - offset))
        * i128::from(unit.per_second())
        + i128::from(frac);
    i64::try_from(total).map_err(|_| format!("timestamp {s:?} out of range"))
}

pub(crate) fn format_timestamp(out: &mut Vec<u8>, v: i64, unit: Unit) {
    let per = unit.per_second();
    let secs = v.div_euclid(per);
    let frac = v.rem_euclid(per);
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let mut s = String::with_capacity(32);
    push_date(&mut s, days);
    let _ = write!(s, "T{:02}:{:02}:{:02}.{frac:0w$}Z", sod / 3600, sod / 60 % 60, sod % 60, w = unit.digits());
    crate::json::write_str(out, &s);
}

/// `8-4-4-4-12` hex digits, either case.
pub(crate) fn check_uuid(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() });
    if ok { Ok(()) } else { Err(format!("invalid uuid {s:?}")) }
}

/// A parsed decimal number: sign, significant digits (no leading zeros; empty for zero) and the power of ten
/// applied to them (value = digits * 10^exp).
#[derive(Debug, PartialEq)]
pub(crate) struct DecimalText {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

/// Longest decimal text accepted, so a hostile exponent or digit run cannot make us allocate or loop much.
const MAX_DECIMAL_DIGITS: usize = 10_000;

/// Consumes an optional `+` or `-` at `b[*i]`; true for `-`.
fn take_sign(b: &[u8], i: &mut usize) -> bool {
    match b.get(*i) {
        Some(b'-') => {
            *i += 1;
            true
        }
        Some(b'+') => {
            *i += 1;
            false
        }
        _ => false,
    }
}

pub(crate) fn parse_decimal(s: &str) -> Result<DecimalText, String> {
    let bad = || format!("invalid decimal {s:?}");
    let b = s.as_bytes();
    let mut i = 0;
    let negative = take_sign(b, &mut i);
    let mut digits = Vec::new();
    let mut frac_len = 0i64;
    let mut seen_digit = false;
    let mut in_frac = false;
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                seen_digit = true;
                if !(digits.is_empty() && c == b'0') {
                    digits.push(c - b'0');
                }
                if in_frac {
                    frac_len += 1;
                }
            }
            b'.' if !in_frac => in_frac = true,
            _ => break,
        }
        i += 1;
        if digits.len() > MAX_DECIMAL_DIGITS || frac_len > MAX_DECIMAL_DIGITS as i64 {
            return Err(format!("decimal {s:?} has too many digits"));
        }
    }
    if !seen_digit {
        return Err(bad());
    }
    let mut exp = 0i64;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let neg_exp = take_sign(b, &mut i);
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            exp = exp.saturating_mul(10).saturating_add(i64::from(c - b'0'));
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        if neg_exp {
            exp = -exp;
        }
    }
    if i != b.len() {
        return Err(bad());
    }
    let exp = exp.saturating_sub(frac_len);
    Ok(DecimalText { negative: negative && !digits.is_empty(), digits, exp })
}

impl DecimalText {
    /// Digits of the unscaled value at `scale`, or why it does not fit `precision`/`scale`.
    fn unscaled(&self, precision: usize, scale: usize) -> Result<Vec<u8>, String> {
        if self.digits.is_empty() {
            return Ok(Vec::new());
        }
        // value = digits * 10^exp; unscaled = value * 10^scale = digits * 10^(exp + scale).
        let shift = self.exp.saturating_add(scale as i64);
        let mut digits = self.digits.clone();
        if shift >= 0 {
            let total = (digits.len() as i64).saturating_add(shift);
            if total > precision as i64 {
                return Err(format!("decimal has {total} digits at scale {scale}, more than precision {precision}"));
            }
            digits.resize(total as usize, 0);
        } else {
            let drop = shift.unsigned_abs();
            let keep = (digits.len() as u64).saturating_sub(drop) as usize;
            if digits[keep..].iter().any(|&d| d != 0) {
                return Err(format!("decimal has more fraction digits than scale {scale}"));
            }
            digits.truncate(keep);
            if digits.len() > precision {
                return Err(format!("decimal has {} digits, more than precision {precision}", digits.len()));
            }
        }
        Ok(digits)
    }

    /// Two's-complement big-endian bytes of the unscaled value at `scale`, minimal length.
    pub(crate) fn to_bytes(&self, precision: usize, scale: usize) -> Result<Vec<u8>, String> {
        let digits = self.unscaled(precision, scale)?;
        Ok(twos_complement(self.negative, &digits))
    }

    /// For `big-decimal`: the digits as written and the scale they imply.
    pub(crate) fn to_big(&self) -> Result<(Vec<u8>, i64), String> {
        let scale = self.exp.checked_neg().filter(|s| s.unsigned_abs() <= MAX_DECIMAL_DIGITS as u64);
        let scale = scale.ok_or_else(|| "decimal exponent out of range".to_string())?;
        Ok((twos_complement(self.negative, &self.digits), scale))
    }
}

/// Decimal digits (most significant first) to minimal two's-complement big-endian bytes.
fn twos_complement(negative: bool, digits: &[u8]) -> Vec<u8> {
    // Little-endian base 2^32 limbs, built nine digits at a time.
    let mut limbs: Vec<u32> = Vec::with_capacity(digits.len() / 9 + 1);
    for chunk in digits.chunks(9) {
        let mut mul = 1u64;
        let mut add = 0u64;
        for &d in chunk {
            mul *= 10;
            add = add * 10 + u64::from(d);
        }
        let mut carry = add;
        for limb in &mut limbs {
            let v = u64::from(*limb) * mul + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(limbs.len() * 4 + 1);
    bytes.push(0);
    for limb in limbs.iter().rev() {
        bytes.extend_from_slice(&limb.to_be_bytes());
    }
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in bytes.iter_mut().rev() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let keep = redundant_sign_bytes(&bytes);
    bytes.drain(..keep);
    bytes
}

/// How many leading bytes only repeat the sign.
fn redundant_sign_bytes(bytes: &[u8]) -> usize {
    let mut n = 0;
    while n + 1 < bytes.len() {
        let (a, b) = (bytes[n], bytes[n + 1]);
        if (a == 0 && b & 0x80 == 0) || (a == 0xff && b & 0x80 != 0) {
            n += 1;
        } else {
            break;
        }
    }
    n
}

/// Sign-extends minimal two's-complement bytes to `size`, or `None` when they do not fit.
pub(crate) fn sign_extend(bytes: &[u8], size: usize) -> Option<Vec<u8>> {
    if bytes.len() > size {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
    let mut out = vec![fill; size - bytes.len()];
    out.extend_from_slice(bytes);
    Some(out)
}

/// Decimal digits (no sign, no leading zeros; "0" for zero) of two's-complement big-endian bytes, and whether
/// the value is negative. `max_digits` bounds the work: longer values are refused before any conversion.
fn integer_digits(bytes: &[u8], max_digits: usize) -> Result<(bool, String), String> {
    let bytes = &bytes[redundant_sign_bytes(bytes)..];
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // Each byte carries at most log10(256) < 2.41 digits; refuse clearly oversized values early.
    if bytes.len() > 2 && (bytes.len() - 1) * 241 / 100 > max_digits {
        return Err(format!("decimal value has more than {max_digits} digits"));
    }
    if bytes.len() <= 16 {
        let mut v: i128 = if negative { -1 } else { 0 };
        for &b in bytes {
            v = (v << 8) | i128::from(b);
        }
        return Ok((negative, v.unsigned_abs().to_string()));
    }
    let mut mag = bytes.to_vec();
    if negative {
        let mut carry = true;
        for b in mag.iter_mut().rev() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    // Repeated division by 10^9 of the big-endian magnitude.
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < mag.len() {
        let mut rem = 0u64;
        for b in &mut mag[start..] {
            let cur = (rem << 8) | u64::from(*b);
            *b = (cur / 1_000_000_000) as u8;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while start < mag.len() && mag[start] == 0 {
            start += 1;
        }
    }
    let mut s = String::new();
    for (i, c) in chunks.iter().rev().enumerate() {
        if i == 0 {
            let _ = write!(s, "{c}");
        } else {
            let _ = write!(s, "{c:09}");
        }
    }
    if s.is_empty() {
        s.push('0');
    }
    Ok((negative, s))
}

/// Places the decimal point `scale` digits from the right (a negative scale appends zeros).
fn place_point(negative: bool, digits: &str, scale: i64) -> String {
    let mut s = String::with_capacity(digits.len() + 4);
    if negative {
        s.push('-');
    }
    if scale <= 0 {
        s.push_str(digits);
        if digits != "0" {
            s.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        }
    } else {
        let scale = scale as usize;
        if digits.len() > scale {
            let (a, b) = digits.split_at(digits.len() - scale);
            s.push_str(a);
            s.push('.');
            s.push_str(b);
        } else {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', scale - digits.len()));
            s.push_str(digits);
        }
    }
    s
}

/// Text of a `decimal` value; refuses values with more digits than `precision`.
pub(crate) fn format_decimal(bytes: &[u8], precision: usize, scale: usize) -> Result<String, String> {
    let (negative, digits) = integer_digits(bytes, precision)?;
    if digits.len() > precision && digits != "0" {
        return Err(format!("decimal value has {} digits, more than precision {precision}", digits.len()));
    }
    Ok(place_point(negative, &digits, scale as i64))
}

/// Text of a `big-decimal` value (its own scale).
pub(crate) fn format_big_decimal(unscaled: &[u8], scale: i64) -> Result<String, String> {
    if scale.unsigned_abs() > MAX_DECIMAL_DIGITS as u64 {
        return Err(format!("big-decimal scale {scale} out of range"));
    }
    let (negative, digits) = integer_digits(unscaled, MAX_DECIMAL_DIGITS)?;
    Ok(place_point(negative, &digits, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn civil_round_trip_over_a_wide_range() {
        for days in (-800_000..800_000).step_by(37).chain([-719_468, 0, 1, 2_932_896, 2_932_897]) {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        for bad in ["2023-02-29", "2024-13-01", "2024-1-01", "2024-01-01x", "", "+123-01-01", "２０２４-01-01"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert_eq!(text(|o| format_date(o, 19_782)), "2024-02-29");
        for days in [i32::MIN, -719_529, -1, 0, i32::MAX] {
            let s = text(|o| format_date(o, i64::from(days)));
            assert_eq!(parse_date(&s), Ok(days), "{s}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("00:00:00", Unit::Millis), Ok(0));
        assert_eq!(parse_time("23:59:59.999", Unit::Millis), Ok(86_399_999));
        assert_eq!(parse_time("12:00:00.1234567", Unit::Micros), Ok(43_200_123_456));
        for bad in ["24:00:00", "12:60:00", "12:00:60", "12:00", "12:00:00.", "12:00:00.1234567890"] {
            assert!(parse_time(bad, Unit::Millis).is_err(), "{bad}");
        }
        assert_eq!(text(|o| format_time(o, 86_399_999, Unit::Millis).unwrap()), "23:59:59.999");
        assert_eq!(text(|o| format_time(o, 5, Unit::Micros).unwrap()), "00:00:00.000005");
        assert!(format_time(&mut Vec::new(), 86_400_000, Unit::Millis).is_none());
        assert!(format_time(&mut Vec::new(), -1, Unit::Millis).is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z", Unit::Millis, false), Ok(0));
        assert_eq!(parse_timestamp("2024-05-01T12:00:00.5+02:00", Unit::Millis, false), Ok(1_714_557_600_500));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.999999Z", Unit::Micros, false), Ok(-1));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.9999999Z", Unit::Micros, false), Ok(-1));
        assert_eq!(parse_timestamp("2024-05-01 12:00:00", Unit::Millis, true), Ok(1_714_564_800_000));
        assert!(parse_timestamp("2024-05-01T12:00:00", Unit::Millis, false).is_err());
        assert!(parse_timestamp("2024-05-01T12:00:00Zx", Unit::Millis, false).is_err());
        assert!(parse_timestamp("+99999999999-01-01T00:00:00Z", Unit::Nanos, false).is_err());
        assert_eq!(text(|o| format_timestamp(o, -1, Unit::Millis)), "1969-12-31T23:59:59.999Z");
        assert_eq!(text(|o| format_timestamp(o, 1_714_557_600_500, Unit::Millis)), "2024-05-01T10:00:00.500Z");
        for v in [i64::MIN, i64::MAX, 0, -1, 1_714_557_600_500_123] {
            for unit in [Unit::Millis, Unit::Micros, Unit::Nanos] {
                let s = text(|o| format_timestamp(o, v, unit));
                assert_eq!(parse_timestamp(&s, unit, false), Ok(v), "{s}");
            }
        }
    }

    #[test]
    fn uuids() {
        assert!(check_uuid("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert!(check_uuid("550E8400-E29B-41D4-A716-446655440000").is_ok());
        assert!(check_uuid("550e8400e29b41d4a716446655440000").is_err());
        assert!(check_uuid("550e8400-e29b-41d4-a716-44665544000g").is_err());
    }

    fn dec(s: &str, p: usize, sc: usize) -> Result<Vec<u8>, String> {
        parse_decimal(s)?.to_bytes(p, sc)
    }

    #[test]
    fn decimal_encoding() {
        assert_eq!(dec("12.34", 4, 2), Ok(vec![0x04, 0xd2]));
        assert_eq!(dec("-12.34", 4, 2), Ok(vec![0xfb, 0x2e]));
        assert_eq!(dec("0", 4, 2), Ok(vec![0]));
        assert_eq!(dec("-0.00", 4, 2), Ok(vec![0]));
        assert_eq!(dec("1.5e1", 4, 2), Ok(vec![0x05, 0xdc]));
        assert_eq!(dec("12.340", 4, 2), Ok(vec![0x04, 0xd2]));
        assert_eq!(dec("128", 3, 0), Ok(vec![0x00, 0x80]));
        assert_eq!(dec("-128", 3, 0), Ok(vec![0x80]));
        assert!(dec("123.45", 4, 2).unwrap_err().contains("precision 4"));
        assert!(dec("1.234", 4, 2).unwrap_err().contains("scale 2"));
        assert!(dec("1e999999999999", 4, 2).is_err());
        for bad in ["", "-", ".", "1.2.3", "1e", "abc", "1 "] {
            assert!(parse_decimal(bad).is_err(), "{bad}");
        }
        assert_eq!(sign_extend(&[0xfb, 0x2e], 4), Some(vec![0xff, 0xff, 0xfb, 0x2e]));
        assert_eq!(sign_extend(&[1, 2, 3], 2), None);
    }

    #[test]
    fn decimal_text() {
        assert_eq!(format_decimal(&[0x04, 0xd2], 4, 2).unwrap(), "12.34");
        assert_eq!(format_decimal(&[0xff, 0xfb], 4, 2).unwrap(), "-0.05");
        assert_eq!(format_decimal(&[], 4, 2).unwrap(), "0.00");
        assert_eq!(format_decimal(&[0x7f], 3, 0).unwrap(), "127");
        assert!(format_decimal(&[0x27, 0x10], 4, 0).is_err());
        assert!(format_decimal(&[0x7f; 5000], 10, 0).is_err());
        // Values beyond i128 take the long-division path; compare with parsing back.
        let big = "-123456789012345678901234567890123456789012345678901234567890.12";
        let bytes = parse_decimal(big).unwrap().to_bytes(70, 2).unwrap();
        assert!(bytes.len() > 16);
        assert_eq!(format_decimal(&bytes, 70, 2).unwrap(), big);
        assert_eq!(format_big_decimal(&[0x04, 0xd2], -2).unwrap(), "123400");
        assert_eq!(format_big_decimal(&[0x04, 0xd2], 5).unwrap(), "0.01234");
        let (b, s) = parse_decimal("-1.50").unwrap().to_big().unwrap();
        assert_eq!(format_big_decimal(&b, s).unwrap(), "-1.50");
    }
}
