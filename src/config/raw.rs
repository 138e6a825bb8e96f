//! The decoded configuration tree (`Raw`) and decoding errors, shared by the HCL1 and JSON
//! readers (`hcl1`, `parse`) and the validation above them.

use std::fmt;

/// One decoded value. Keys keep their original spelling and order; duplicates are kept
/// (the decoder applies HCL1's "last one wins" / "blocks merge" rules).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Str(String),
    /// A number, as written (HCL1 hands numbers to string fields as their text).
    Num(String),
    Bool(bool),
    Null,
    List(Vec<Raw>),
    Object(Vec<(String, Raw)>),
}

impl Raw {
    /// "a string", "a list", … for type errors.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Raw::Str(_) => "a string",
            Raw::Num(_) => "a number",
            Raw::Bool(_) => "a boolean",
            Raw::Null => "null",
            Raw::List(_) => "a list",
            Raw::Object(_) => "an object",
        }
    }
}

/// Why the text could not be decoded; `Display` is the part after
/// `unable to decode configuration: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(pub(crate) String);

impl DecodeError {
    /// An error at a byte offset of `src`, rendered HCL1-style as `line:col: msg`.
    pub(crate) fn at(src: &str, offset: usize, msg: impl fmt::Display) -> Self {
        let (line, col) = line_col(src, offset);
        DecodeError(format!("{line}:{col}: {msg}"))
    }
}

/// 1-based line and column (in characters, as HCL1 counts) of a byte offset. Offsets past
/// the end, or inside a character, resolve to the next character boundary.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut col) = (1, 1);
    for (_, c) in src.char_indices().take_while(|&(i, _)| i < offset) {
        col += 1;
        if c == '\n' {
            (line, col) = (line + 1, 1);
        }
    }
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 0), (1, 1));
        assert_eq!(line_col("ab\ncé d", 3), (2, 1));
        // 'd' is at byte 7 ('é' is two bytes) and is the 4th character of line 2.
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
