//! Ports of the string helpers Sprig takes from `huandu/xstrings` (camel/snake/kebab case)
//! and `Masterminds/goutils` (abbreviate, initials, swap case, wrap, ...), keeping their
//! quirks (several goutils helpers work on bytes, not runes).

use super::unicode::{
    go_is_letter, go_is_lower, go_is_number, go_is_punct, go_is_space, go_is_title, go_is_upper,
    go_to_lower, go_to_title, go_to_upper,
};

/// Go's `utf8.RuneError`, which xstrings treats as "invalid" even when it is literal input.
const RUNE_ERROR: char = '\u{FFFD}';

fn tail(s: &str, i: usize) -> &str {
    s.get(i..).unwrap_or("")
}

fn head(s: &str, i: usize) -> &str {
    s.get(..i).unwrap_or(s)
}

/// Bytes to a string; Go keeps invalid UTF-8, we substitute U+FFFD.
pub(crate) fn bytes_to_string(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `s[a:b]` on bytes, as Go slices strings. None when out of range.
pub(crate) fn byte_slice(s: &str, a: usize, b: usize) -> Option<String> {
    let bytes = s.as_bytes().get(a..b)?;
    Some(bytes_to_string(bytes.to_vec()))
}

// ---- huandu/xstrings -------------------------------------------------------------------

fn is_connector(r: char) -> bool {
    r == '-' || r == '_' || go_is_space(r)
}

/// xstrings' `isAlphabet`: a letter that is not a CJK ideograph.
fn is_alphabet(r: char) -> bool {
    if !go_is_letter(r) {
        return false;
    }
    let u = r as u32;
    !((0x4E00..=0x9FCC).contains(&u)
        || (0x3400..=0x4D85).contains(&u)
        || (0x20000..=0x2B81D).contains(&u))
}

/// xstrings `toCamelCase(str, isBig)`; Sprig's `camelcase` uses the upper-camel form.
pub(crate) fn to_camel_case(s: &str, is_big: bool) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut buf = String::with_capacity(s.len());
    let mut is_first_rune_upper = false;
    let mut rest = s;
    let mut r0 = '\0';
    let mut size = 0usize;
    // Leading connectors are kept as they are.
    while let Some(c) = rest.chars().next() {
        r0 = c;
        size = c.len_utf8();
        rest = tail(rest, size);
        if !is_connector(r0) {
            is_first_rune_upper = go_is_upper(r0);
            r0 = if is_big {
                go_to_upper(r0)
            } else {
                go_to_lower(r0)
            };
            break;
        }
        buf.push(r0);
    }
    if rest.is_empty() {
        // xstrings writes the last rune again here, even when it was a connector.
        if size != 0 {
            buf.push(r0);
        }
        return buf;
    }
    while let Some(c) = rest.chars().next() {
        let r1 = r0;
        r0 = c;
        rest = tail(rest, c.len_utf8());
        if is_connector(r0) && is_connector(r1) {
            buf.push(r1);
            continue;
        }
        if is_connector(r1) {
            is_first_rune_upper = go_is_upper(r0);
            r0 = go_to_upper(r0);
        } else {
            if is_first_rune_upper {
                if go_is_upper(r0) {
                    r0 = go_to_lower(r0);
                } else {
                    is_first_rune_upper = false;
                }
            }
            buf.push(r1);
        }
    }
    if is_first_rune_upper && !is_big {
        r0 = go_to_lower(r0);
    }
    buf.push(r0);
    buf
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Word {
    Invalid,
    Number,
    UpperCase,
    Alphabet,
    Connector,
    Punct,
    Other,
}

fn next_valid_rune(s: &str, prev: char) -> (char, usize) {
    let mut size = 0;
    for c in s.chars() {
        size += c.len_utf8();
        if c != RUNE_ERROR {
            return (c, size);
        }
    }
    (prev, size)
}

/// Takes the runes at the start of `rest` while `keep` holds, moving `rest` and `offset` on;
/// `r` ends as the last rune looked at. Returns the size of the last rune taken (0 if none).
fn take_while(rest: &mut &str, offset: &mut usize, r: &mut char, keep: fn(char) -> bool) -> usize {
    let mut taken = 0;
    while !rest.is_empty() {
        let size;
        (*r, size) = next_valid_rune(rest, *r);
        if !keep(*r) {
            break;
        }
        taken = size;
        *offset += size;
        *rest = tail(rest, size);
    }
    taken
}

fn next_word(s: &str) -> (Word, &str, &str) {
    if s.is_empty() {
        return (Word::Invalid, "", "");
    }
    let (mut r, size) = next_valid_rune(s, RUNE_ERROR);
    let mut offset = size;
    if r == RUNE_ERROR {
        return (Word::Invalid, head(s, offset), tail(s, offset));
    }
    let mut rest = tail(s, size);
    // The rest of a word: letters but no upper-case ones.
    let letters = |c| is_alphabet(c) && !go_is_upper(c);
    let wt = if is_connector(r) {
        take_while(&mut rest, &mut offset, &mut r, is_connector);
        Word::Connector
    } else if go_is_punct(r) {
        take_while(&mut rest, &mut offset, &mut r, go_is_punct);
        Word::Punct
    } else if go_is_upper(r) {
        let last = take_while(&mut rest, &mut offset, &mut r, go_is_upper);
        if last == 0 {
            take_while(&mut rest, &mut offset, &mut r, letters);
        } else if !rest.is_empty() && is_alphabet(r) {
            // "HTTPStatus" splits into "HTTP" and "Status".
            offset -= last;
            rest = tail(s, offset);
        }
        Word::UpperCase
    } else if is_alphabet(r) {
        take_while(&mut rest, &mut offset, &mut r, letters);
        Word::Alphabet
    } else if go_is_number(r) {
        take_while(&mut rest, &mut offset, &mut r, go_is_number);
        Word::Number
    } else {
        let other = |c| !(is_connector(c) || is_alphabet(c) || go_is_number(c) || go_is_punct(c));
        take_while(&mut rest, &mut offset, &mut r, other);
        Word::Other
    };
    (wt, head(s, offset), rest)
}

fn to_lower_word(buf: &mut String, wt: Word, s: &str, connector: char) {
    if wt != Word::UpperCase && wt != Word::Connector {
        buf.push_str(s);
        return;
    }
    for r in s.chars() {
        if is_connector(r) {
            buf.push(connector);
        } else if go_is_upper(r) {
            buf.push(go_to_lower(r));
        } else {
            buf.push(r);
        }
    }
}

/// xstrings `camelCaseToLowerCase`: `snakecase` with `_`, `kebabcase` with `-`.
pub(crate) fn camel_to_lower(s: &str, connector: char) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut buf = String::with_capacity(s.len() + 8);
    let (mut wt, mut word, mut remaining) = next_word(s);
    while !remaining.is_empty() {
        if wt != Word::Connector {
            to_lower_word(&mut buf, wt, word, connector);
        }
        let prev = wt;
        let last = word;
        (wt, word, remaining) = next_word(remaining);
        match prev {
            Word::Number => {
                while wt == Word::Alphabet || wt == Word::Number {
                    to_lower_word(&mut buf, wt, word, connector);
                    (wt, word, remaining) = next_word(remaining);
                }
                if wt != Word::Invalid && wt != Word::Punct && wt != Word::Connector {
                    buf.push(connector);
                }
            }
            Word::Connector => to_lower_word(&mut buf, prev, last, connector),
            Word::Punct => {}
            _ => {
                if wt != Word::Number {
                    if wt != Word::Connector && wt != Word::Punct {
                        buf.push(connector);
                    }
                    continue;
                }
                if remaining.is_empty() {
                    continue;
                }
                let last = word;
                (wt, word, remaining) = next_word(remaining);
                // A number followed by a non-letter belongs to the previous word ("Bld4Floor").
                if wt != Word::Alphabet {
                    to_lower_word(&mut buf, Word::Number, last, connector);
                    if wt != Word::Connector && wt != Word::Punct {
                        buf.push(connector);
                    }
                    continue;
                }
                // Lower-case letters after a number start a new word ("HTTP2xx").
                buf.push(connector);
                to_lower_word(&mut buf, Word::Number, last, connector);
                while wt == Word::Alphabet || wt == Word::Number {
                    to_lower_word(&mut buf, wt, word, connector);
                    (wt, word, remaining) = next_word(remaining);
                }
                if wt != Word::Invalid && wt != Word::Connector && wt != Word::Punct {
                    buf.push(connector);
                }
            }
        }
    }
    to_lower_word(&mut buf, wt, word, connector);
    buf
}

// ---- Go strings / Masterminds goutils --------------------------------------------------

/// `strings.Title` (deprecated in Go, still what Sprig's `title` uses).
pub(crate) fn title(s: &str) -> String {
    let is_separator = |r: char| -> bool {
        if r.is_ascii() {
            return !(r.is_ascii_alphanumeric() || r == '_');
        }
        go_is_space(r)
    };
    let mut prev = ' ';
    s.chars()
        .map(|r| {
            let out = if is_separator(prev) {
                go_to_title(r)
            } else {
                r
            };
            prev = r;
            out
        })
        .collect()
}

/// goutils `Uncapitalize` with whitespace delimiters.
pub(crate) fn uncapitalize(s: &str) -> String {
    let mut next = true;
    s.chars()
        .map(|ch| {
            if go_is_space(ch) {
                next = true;
                ch
            } else if next {
                next = false;
                go_to_lower(ch)
            } else {
                ch
            }
        })
        .collect()
}

/// goutils `SwapCase`: upper/title to lower, lower to title after whitespace, else upper.
pub(crate) fn swap_case(s: &str) -> String {
    let mut whitespace = true;
    s.chars()
        .map(|ch| {
            if go_is_upper(ch) || go_is_title(ch) {
                whitespace = false;
                go_to_lower(ch)
            } else if go_is_lower(ch) {
                if whitespace {
                    whitespace = false;
                    go_to_title(ch)
                } else {
                    go_to_upper(ch)
                }
            } else {
                whitespace = go_is_space(ch);
                ch
            }
        })
        .collect()
}

/// Go's `unicode.IsSpace` on a byte taken as a Latin-1 rune (goutils iterates bytes).
fn latin1_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' | 0x85 | 0xA0)
}

/// goutils `DeleteWhiteSpace`: byte-wise, re-encoding each byte as a Latin-1 rune.
pub(crate) fn delete_white_space(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let kept: String = s
        .bytes()
        .filter(|&b| !latin1_space(b))
        .map(char::from)
        .collect();
    if kept.chars().count() == s.len() {
        return s.to_string();
    }
    kept
}

/// goutils `Initials` with whitespace delimiters (byte-wise like the original).
pub(crate) fn initials(s: &str) -> String {
    let mut out = String::new();
    let mut last_was_gap = true;
    for b in s.bytes() {
        if latin1_space(b) {
            last_was_gap = true;
        } else if last_was_gap {
            out.push(char::from(b));
            last_was_gap = false;
        }
    }
    out
}

/// goutils `AbbreviateFull`; None stands for its error result (Sprig then yields "").
pub(crate) fn abbreviate_full(s: &str, offset: i64, max_width: i64) -> Option<String> {
    if s.is_empty() {
        return Some(String::new());
    }
    if max_width < 4 {
        return None;
    }
    let len = s.len() as i64;
    if len <= max_width {
        return Some(s.to_string());
    }
    let mut offset = offset.min(len);
    if len - offset < max_width - 3 {
        offset = len - (max_width - 3);
    }
    let to = |v: i64| usize::try_from(v).ok();
    if offset <= 4 {
        let mut r = byte_slice(s, 0, to(max_width - 3)?)?;
        r.push_str("...");
        return Some(r);
    }
    if max_width < 7 {
        return None;
    }
    if offset + max_width - 3 < len {
        let inner = byte_slice(s, to(offset)?, s.len())?;
        return Some(format!("...{}", abbreviate_full(&inner, 0, max_width - 3)?));
    }
    Some(format!(
        "...{}",
        byte_slice(s, to(len - (max_width - 3))?, s.len())?
    ))
}

/// goutils `WrapCustom` (byte-based, like the original).
pub(crate) fn wrap_custom(
    s: &str,
    wrap_length: i64,
    newline: &str,
    wrap_long_words: bool,
) -> String {
    if s.is_empty() {
        return String::new();
    }
    let newline = if newline.is_empty() { "\n" } else { newline };
    let b = s.as_bytes();
    let n = b.len();
    let wl = usize::try_from(wrap_length.max(1)).unwrap_or(usize::MAX);
    let mut out: Vec<u8> = Vec::with_capacity(n + 16);
    let mut offset = 0usize;
    while n - offset > wl {
        if b[offset] == b' ' {
            offset += 1;
            continue;
        }
        let end = offset + wl;
        // Where the line ends, and whether a space is dropped there.
        let (at, skip) = match b[offset..=end].iter().rposition(|&c| c == b' ') {
            Some(rel) => (offset + rel, 1),
            None if wrap_long_words => (end, 0),
            None => match b[end..].iter().position(|&c| c == b' ') {
                Some(rel) => (end + rel, 1),
                None => break,
            },
        };
        out.extend_from_slice(&b[offset..at]);
        out.extend_from_slice(newline.as_bytes());
        offset = at + skip;
    }
    out.extend_from_slice(&b[offset..]);
    bytes_to_string(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xstrings_documented_samples() {
        for (input, snake) in [
            ("FirstName", "first_name"),
            ("HTTPServer", "http_server"),
            ("NoHTTPS", "no_https"),
            ("GO_PATH", "go_path"),
            ("GO PATH", "go_path"),
            ("GO-PATH", "go_path"),
            ("http2xx", "http_2xx"),
            ("HTTP20xOK", "http_20x_ok"),
            ("Duration2m3s", "duration_2m3s"),
            ("Bld4Floor3rd", "bld4_floor_3rd"),
        ] {
            assert_eq!(camel_to_lower(input, '_'), snake, "{input}");
            assert_eq!(
                camel_to_lower(input, '-'),
                snake.replace('_', "-"),
                "{input}"
            );
        }
        for (input, pascal) in [
            ("some_words", "SomeWords"),
            ("http_server", "HttpServer"),
            ("no_https", "NoHttps"),
            ("_complex__case_", "_Complex_Case_"),
            ("some words", "SomeWords"),
            ("GOLANG_IS_GREAT", "GolangIsGreat"),
        ] {
            assert_eq!(to_camel_case(input, true), pascal, "{input}");
        }
        assert_eq!(to_camel_case("http_server", false), "httpServer");
    }

    #[test]
    fn goutils_helpers() {
        assert_eq!(
            abbreviate_full("hello world", 0, 5).as_deref(),
            Some("he...")
        );
        assert_eq!(
            abbreviate_full("1234 5678 9123", 5, 10).as_deref(),
            Some("...5678...")
        );
        assert_eq!(abbreviate_full("abcdefghij", 8, 5), None);
        assert_eq!(initials("First Try"), "FT");
        assert_eq!(delete_white_space("hello w o r l d"), "helloworld");
        assert_eq!(swap_case("This Is A.Test"), "tHIS iS a.tEST");
        assert_eq!(uncapitalize("Hello World"), "hello world");
        assert_eq!(title("hello world-wide_web"), "Hello World-Wide_web");
        assert_eq!(wrap_custom("Hello World", 5, "\t", true), "Hello\tWorld");
        assert_eq!(wrap_custom("abcdefgh ij", 3, "", false), "abcdefgh\nij");
        assert_eq!(wrap_custom("abcdefgh", 3, "|", true), "abc|def|gh");
    }
}
