//! Test-only helpers for the bounded fuzz/property tests (`fuzz_tests` modules next to the code
//! they exercise): input mutators over the shared deterministic test RNG (`testkit/`). No
//! external crate: the loops only need reproducible pseudo-random bytes, and a failing case is
//! printed in full so it can be kept as a regression test. Longer, coverage-guided runs: see `fuzz/README.md`.

pub(crate) use azkv_testkit::Rng;

/// Iterations for a loop: `base`, times `AZKV_FUZZ_SCALE` when set (longer local runs:
/// `AZKV_FUZZ_SCALE=200 cargo test --release --lib fuzz`).
pub(crate) fn scaled(base: usize) -> usize {
    std::env::var("AZKV_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(base, |n| base.saturating_mul(n))
}

/// Characters that tend to matter to parsers: delimiters, quotes, escapes, control and
/// non-ASCII characters.
pub(crate) const INTERESTING_CHARS: &[char] = &[
    '{',
    '}',
    '[',
    ']',
    '(',
    ')',
    '"',
    '\'',
    '`',
    '\\',
    '=',
    ':',
    ',',
    ';',
    '.',
    '-',
    '+',
    '/',
    '*',
    '#',
    '<',
    '>',
    '$',
    '%',
    '@',
    '?',
    '&',
    ' ',
    '\t',
    '\n',
    '\r',
    '\0',
    '\u{7f}',
    'é',
    '\u{FFFD}',
    '\u{1F600}',
    '\u{202E}',
    '0',
    '9',
    'e',
    'E',
    'x',
    'a',
    'Z',
    '_',
];

/// Applies 1 to 4 random edits to `s` (delete, insert, replace, duplicate a span, cut, or
/// splice in a piece of `donor`). Works on chars, so the result stays valid UTF-8.
pub(crate) fn mutate(rng: &mut Rng, s: &str, donor: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let donor: Vec<char> = donor.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(7) {
            0 if at < chars.len() => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                chars.drain(at..end);
            }
            1 => chars.insert(at, *rng.pick(INTERESTING_CHARS)),
            2 if at < chars.len() => chars[at] = *rng.pick(INTERESTING_CHARS),
            3 if at < chars.len() => {
                let end = (at + 1 + rng.below(16)).min(chars.len());
                let span: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                for (i, c) in span.into_iter().enumerate() {
                    chars.insert(to + i, c);
                }
            }
            4 => chars.truncate(at),
            5 if !donor.is_empty() => {
                let from = rng.below(donor.len());
                let end = (from + 1 + rng.below(24)).min(donor.len());
                for (i, c) in donor[from..end].iter().enumerate() {
                    chars.insert(at + i, *c);
                }
            }
            _ if at < chars.len() => {
                // Flip an ASCII letter's case or a digit's value: near-misses of keywords.
                let c = chars[at];
                chars[at] = if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else if c.is_ascii_digit() {
                    char::from(b'0' + rng.below(10) as u8)
                } else {
                    c.to_ascii_lowercase()
                };
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Bytes DER parsers care about: tags (INTEGER, OCTET STRING, NULL, OID, SEQUENCE, `[0]`),
/// the short/long length forms and their edges, sign bits.
pub(crate) const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x30, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xa0, 0xff,
];

/// Applies 1 to 4 random edits to binary `data` (flip a bit, set a byte to one DER cares
/// about, insert one, delete or duplicate a span, or, rarely, cut the tail).
pub(crate) fn mutate_bytes(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(11) {
            0..=2 if at < out.len() => out[at] ^= 1 << rng.below(8),
            3..=5 if at < out.len() => out[at] = *rng.pick(INTERESTING_BYTES),
            6 | 7 => out.insert(at, *rng.pick(INTERESTING_BYTES)),
            8 if at < out.len() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            9 if at < out.len() => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                let span = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, span);
            }
            10 if rng.one_in(4) => out.truncate(at),
            _ => {}
        }
    }
    out
}

/// A random JSON value, `depth` levels deep at most, biased toward the shapes Azure sends
/// (strings that look like numbers, numbers at the edges of f64 and i64, nested objects).
pub(crate) fn json_value(rng: &mut Rng, depth: usize, keys: &[&str]) -> serde_json::Value {
    use serde_json::Value;
    let leaf = depth == 0 || rng.one_in(3);
    if leaf {
        return match rng.below(10) {
            0 => Value::Null,
            1 => Value::Bool(rng.one_in(2)),
            2 => Value::from(rng.next_u64() as i64),
            3 => serde_json::Number::from_f64(*rng.pick(&EDGE_FLOATS))
                .map(Value::Number)
                .unwrap_or(Value::Null),
            4 => Value::String(rng.pick(&EDGE_NUMBER_STRINGS).to_string()),
            5 => Value::String(rng.lossy_string(24)),
            6 => Value::String(String::new()),
            _ => Value::String(rng.pick(keys).to_string()),
        };
    }
    if rng.one_in(3) {
        let n = rng.below(4);
        Value::Array((0..n).map(|_| json_value(rng, depth - 1, keys)).collect())
    } else {
        let n = rng.below(6);
        let mut m = serde_json::Map::new();
        for _ in 0..n {
            let k = if rng.one_in(5) {
                rng.lossy_string(8)
            } else {
                rng.pick(keys).to_string()
            };
            m.insert(k, json_value(rng, depth - 1, keys));
        }
        Value::Object(m)
    }
}

pub(crate) const EDGE_FLOATS: [f64; 12] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-300,
    1e9,
    1e11,
    1e19,
    1e300,
    f64::MAX,
    f64::MIN,
];

pub(crate) const EDGE_NUMBER_STRINGS: [&str; 20] = [
    "0",
    "-1",
    "1.5",
    " 42 ",
    "1e300",
    "-1e300",
    "1e999",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "infinity",
    "18446744073709551616",
    "0x10",
    "",
    " ",
    "1_000",
    "+3",
    "4e-400",
    "1700000000.999",
];
