//! Go `unicode` package predicates and simple case mappings, approximated with Rust's std
//! tables. Exact for ASCII and Latin-1 (all that key names may contain); outside that range
//! the few known differences between Go's categories and Rust's properties are patched.

/// `unicode.IsSpace`: same set as Rust's White_Space property.
pub(crate) fn go_is_space(c: char) -> bool {
    c.is_whitespace()
}

/// `unicode.IsUpper` (category Lu). Rust's `is_uppercase` also covers Other_Uppercase.
pub(crate) fn go_is_upper(c: char) -> bool {
    c.is_uppercase()
        && !matches!(c as u32,
            0x2160..=0x216F | 0x24B6..=0x24CF | 0x1F130..=0x1F149 | 0x1F150..=0x1F169
            | 0x1F170..=0x1F189)
}

/// `unicode.IsLower` (category Ll). Rust's `is_lowercase` also covers Other_Lowercase.
pub(crate) fn go_is_lower(c: char) -> bool {
    c.is_lowercase()
        && !matches!(c as u32,
            0xAA | 0xBA | 0x2B0..=0x2B8 | 0x2C0..=0x2C1 | 0x2E0..=0x2E4 | 0x345 | 0x37A
            | 0x1D2C..=0x1D6A | 0x1D78 | 0x1D9B..=0x1DBF | 0x2071 | 0x207F | 0x2090..=0x209C
            | 0x2170..=0x217F | 0x24D0..=0x24E9 | 0x2C7C..=0x2C7D | 0xA69C..=0xA69D | 0xA770
            | 0xA7F8..=0xA7F9 | 0xAB5C..=0xAB5F)
}

/// `unicode.IsTitle` (category Lt).
pub(crate) fn go_is_title(c: char) -> bool {
    matches!(c as u32,
        0x1C5 | 0x1C8 | 0x1CB | 0x1F2 | 0x1F88..=0x1F8F | 0x1F98..=0x1F9F | 0x1FA8..=0x1FAF
        | 0x1FBC | 0x1FCC | 0x1FFC)
}

/// `unicode.IsLetter` (category L).
pub(crate) fn go_is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

/// `unicode.IsNumber` (category N).
pub(crate) fn go_is_number(c: char) -> bool {
    c.is_numeric()
}

/// `unicode.IsPunct` (category P). Exact for ASCII and Latin-1, common blocks elsewhere.
pub(crate) fn go_is_punct(c: char) -> bool {
    if c.is_ascii() {
        return "!\"#%&'()*,-./:;?@[\\]_{}".contains(c);
    }
    matches!(c as u32,
        0xA1 | 0xA7 | 0xAB | 0xB6 | 0xB7 | 0xBB | 0xBF | 0x2010..=0x2027 | 0x2030..=0x2043
        | 0x2045..=0x2051 | 0x2053..=0x205E | 0x3001..=0x3003 | 0x3008..=0x3011
        | 0x3014..=0x301F | 0xFF01..=0xFF03 | 0xFF05..=0xFF0A | 0xFF0C..=0xFF0F)
}

/// `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and ASCII space.
pub(crate) fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Format characters, private use and noncharacters are not printable in Go.
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF
        | 0xF0000..=0x10FFFF | 0xFFFE | 0xFFFF)
}

/// `unicode.ToUpper`: Go maps one rune to one rune (simple case mapping).
pub(crate) fn go_to_upper(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    single(c.to_uppercase()).unwrap_or(c)
}

/// `unicode.ToLower` (simple case mapping).
pub(crate) fn go_to_lower(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if c == '\u{130}' {
        return 'i';
    }
    single(c.to_lowercase()).unwrap_or(c)
}

/// `unicode.ToTitle`: like upper case except for the four Latin digraphs.
pub(crate) fn go_to_title(c: char) -> char {
    match c as u32 {
        0x1C4..=0x1C6 => '\u{1C5}',
        0x1C7..=0x1C9 => '\u{1C8}',
        0x1CA..=0x1CC => '\u{1CB}',
        0x1F1..=0x1F3 => '\u{1F2}',
        _ => go_to_upper(c),
    }
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let first = it.next()?;
    if it.next().is_some() {
        None
    } else {
        Some(first)
    }
}

/// `strings.ToUpper`.
pub(crate) fn go_upper(s: &str) -> String {
    s.chars().map(go_to_upper).collect()
}

/// `strings.ToLower`.
pub(crate) fn go_lower(s: &str) -> String {
    s.chars().map(go_to_lower).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_case_mapping_keeps_one_rune() {
        assert_eq!(go_upper("straße"), "STRAßE");
        assert_eq!(go_lower("İI"), "ii");
        assert_eq!(go_to_title('ǆ'), 'ǅ');
        assert!(go_is_upper('A') && !go_is_upper('Ⓐ'));
        assert!(go_is_lower('a') && !go_is_lower('ª'));
    }

    #[test]
    fn ascii_punct_matches_go() {
        assert!(go_is_punct('.') && go_is_punct('_') && go_is_punct('@'));
        assert!(!go_is_punct('$') && !go_is_punct('+') && !go_is_punct('|'));
    }
}
