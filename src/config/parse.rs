//! Turns `hcl_configuration` text into a generic, order-preserving tree (`Raw`).
//!
//! Three input shapes reach us from SPIRE's catalog:
//! - empty or whitespace-only text (no `plugin_data`) → no entries;
//! - HCL1 text as SPIRE re-prints `plugin_data`, quoted keys included (see `hcl1`);
//! - JSON text from a `plugin_data_file`. Like HCL1's `hcl.Decode`, text whose first
//!   non-space character is `{` is JSON, parsed with HCL1's leniency for trailing commas.
//!
//! Errors are the text after `unable to decode configuration: `, starting with `line:col`
//! when the problem has a position.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::hcl1;
use super::raw::{DecodeError, Raw};

/// Top-level entries of the configuration text.
pub(crate) fn parse_document(text: &str) -> Result<Vec<(String, Raw)>, DecodeError> {
    match text.trim_start().chars().next() {
        None => Ok(Vec::new()),
        Some('{') => parse_json(text),
        Some(_) => hcl1::parse(text),
    }
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

/// JSON with HCL1's leniency: a comma right before `}` or `]` is accepted. A first pass
/// with HCL1's JSON token rules finds lexical errors (reported exactly as HCL1 does, e.g.
/// `1:11: illegal char` for `{ malformed json }`) and blanks trailing commas (same length,
/// so serde_json's positions stay true); serde_json then parses the structure.
fn parse_json(text: &str) -> Result<Vec<(String, Raw)>, DecodeError> {
    let cleaned = json_prepass(text)?;
    let mut de = serde_json::Deserializer::from_str(&cleaned);
    let value = Raw::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| serde_error(&e))?;
    match value {
        Raw::Object(entries) => Ok(entries),
        other => Err(DecodeError(format!(
            "1:1: expected a JSON object, found {}",
            other.kind_name()
        ))),
    }
}

fn serde_error(e: &serde_json::Error) -> DecodeError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    DecodeError(format!("{}:{}: {msg}", e.line(), e.column().max(1)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonTok {
    Open,
    Close,
    Colon,
    Comma,
    Value,
}

/// Lexes `text` with HCL1's JSON scanner rules; returns `text` with trailing commas
/// replaced by spaces.
fn json_prepass(text: &str) -> Result<String, DecodeError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset_of = |i: usize| chars.get(i).map_or(text.len(), |&(o, _)| o);
    let mut toks: Vec<(JsonTok, usize)> = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '{' | '[' | ':' | '}' | ']' | ',' => {
                let kind = match c {
                    ':' => JsonTok::Colon,
                    ',' => JsonTok::Comma,
                    '}' | ']' => JsonTok::Close,
                    _ => JsonTok::Open,
                };
                toks.push((kind, offset_of(i)));
                i += 1;
            }
            '"' => {
                i += 1;
                loop {
                    match at(i) {
                        None | Some('\n') => {
                            return Err(DecodeError::at(
                                text,
                                offset_of(i),
                                "literal not terminated",
                            ))
                        }
                        Some('"') => break,
                        Some('\\') => i += 2,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                toks.push((JsonTok::Value, offset_of(start)));
            }
            '-' | '0'..='9' => {
                if c == '-' && !at(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    return Err(DecodeError::at(text, offset_of(i), "illegal char"));
                }
                i += 1;
                while at(i).is_some_and(|d| d.is_ascii_alphanumeric() || "+-.".contains(d)) {
                    i += 1;
                }
                toks.push((JsonTok::Value, offset_of(start)));
            }
            c if c == '_' || c.is_alphabetic() => {
                i += 1;
                while at(i).is_some_and(|d| d == '_' || d == '-' || d.is_alphanumeric()) {
                    i += 1;
                }
                let word = text.get(offset_of(start)..offset_of(i)).unwrap_or("");
                if !matches!(word, "true" | "false" | "null") {
                    // HCL1 reports the position of the word's last character.
                    return Err(DecodeError::at(text, offset_of(i - 1), "illegal char"));
                }
                toks.push((JsonTok::Value, offset_of(start)));
            }
            other => {
                return Err(DecodeError::at(
                    text,
                    offset_of(i),
                    format!("illegal char: {other}"),
                ))
            }
        }
    }
    let mut out = text.to_owned();
    // Only a comma after a value and before a closer is "trailing"; `{,}` stays an error.
    for triple in toks.windows(3) {
        if let [(JsonTok::Value | JsonTok::Close, _), (JsonTok::Comma, off), (JsonTok::Close, _)] =
            triple
        {
            out.replace_range(*off..*off + 1, " ");
        }
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Num(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Num(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Num(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            items.push(item);
        }
        Ok(Raw::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        // A Vec, not a map: keeps source order and duplicate keys, like HCL1.
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Raw>()? {
            entries.push((k, v));
        }
        Ok(Raw::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Raw {
        Raw::Str(v.to_owned())
    }

    #[test]
    fn empty_and_whitespace_give_no_entries() {
        assert_eq!(parse_document("").unwrap(), vec![]);
        assert_eq!(parse_document("  \n\t \r\n").unwrap(), vec![]);
    }

    #[test]
    fn malformed_json_is_reported_like_hcl1() {
        let err = parse_document("{ malformed json }").unwrap_err();
        assert_eq!(err.to_string(), "1:11: illegal char");
    }

    #[test]
    fn json_object_keeps_order_duplicates_and_types() {
        let got = parse_document(
            r#"{"b": "x", "a": 3, "b": true, "n": null, "l": [1.5, "y"], "o": {"k": "v"}}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("b".into(), s("x")),
                ("a".into(), Raw::Num("3".into())),
                ("b".into(), Raw::Bool(true)),
                ("n".into(), Raw::Null),
                ("l".into(), Raw::List(vec![Raw::Num("1.5".into()), s("y")])),
                ("o".into(), Raw::Object(vec![("k".into(), s("v"))])),
            ]
        );
    }

    #[test]
    fn json_trailing_commas_are_accepted() {
        let got = parse_document(
            "{\n  \"key_vault_uri\": \"https://v.vault.azure.net/\",\n  \"l\": [\"a\",],\n}\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("key_vault_uri".into(), s("https://v.vault.azure.net/")),
                ("l".into(), Raw::List(vec![s("a")])),
            ]
        );
    }

    #[test]
    fn json_commas_inside_strings_are_not_touched() {
        let got = parse_document(r#"{"a": "x,}", "b": "y,]",}"#).unwrap();
        assert_eq!(got, vec![("a".into(), s("x,}")), ("b".into(), s("y,]"))]);
    }

    #[test]
    fn json_values_are_literal() {
        let got = parse_document(r#"{"a": "a${b}c \" = { # // \n", "b": "\u00e9"}"#).unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), s("a${b}c \" = { # // \n")),
                ("b".into(), s("é"))
            ]
        );
    }

    #[test]
    fn json_structural_errors_carry_line_and_column() {
        let err = parse_document("{\n  \"a\": \n}").unwrap_err().to_string();
        assert!(err.starts_with("3:1: "), "{err}");
        let err = parse_document("{\"a\": \"b\"} x").unwrap_err().to_string();
        assert_eq!(err, "1:12: illegal char");
        let err = parse_document("{\"a\": \"b\"} {}").unwrap_err().to_string();
        assert!(err.starts_with("1:12: trailing characters"), "{err}");
        let err = parse_document("{\"a\": \"b").unwrap_err().to_string();
        assert_eq!(err, "1:9: literal not terminated");
        let err = parse_document("{\"a\": @}").unwrap_err().to_string();
        assert_eq!(err, "1:7: illegal char: @");
        let err = parse_document("{,}").unwrap_err().to_string();
        assert!(err.starts_with("1:2: "), "{err}");
    }
}
