//! Constants of Go templates (strings, booleans, numbers with Go's int/float view), shared by
//! the parser, which reads them, and the Sprig functions, which take them as arguments.

#[derive(Clone, Debug)]
pub(crate) enum Lit {
    Str(String),
    Bool(bool),
    Num(NumLit),
}

/// A numeric constant with Go's dual int/float view (`3.0` is also the integer 3).
#[derive(Clone, Debug)]
pub(crate) struct NumLit {
    pub(crate) text: String,
    pub(crate) int: Option<i64>,
    pub(crate) float: Option<f64>,
    /// Written with `.`, `e` or `p` (so an untyped use yields float64).
    pub(crate) floaty: bool,
}

impl Lit {
    /// Go's rendering of the literal node, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Lit::Str(s) => super::value::go_quote(s, false),
            Lit::Bool(b) => b.to_string(),
            Lit::Num(n) => n.text.clone(),
        }
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, `0x`/`0o`/`0b`/`0` prefixes, `_` separators.
pub(crate) fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    if !underscores_ok(digits, prefixed) {
        return None;
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() || clean.starts_with(['+', '-']) {
        return None;
    }
    let mag = u64::from_str_radix(&clean, radix).ok()?;
    if neg {
        0i64.checked_sub_unsigned(mag)
    } else {
        i64::try_from(mag).ok()
    }
}

/// Go's rule: `_` only between digits, or right after a base prefix.
fn underscores_ok(digits: &str, prefixed: bool) -> bool {
    let mut prev_underscore = false;
    for (i, c) in digits.chars().enumerate() {
        if c == '_' {
            if (i == 0 && !prefixed) || prev_underscore {
                return false;
            }
            prev_underscore = true;
        } else {
            prev_underscore = false;
        }
    }
    !prev_underscore
}

/// Why a number constant is refused; each variant holds the constant as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NumberError {
    #[error("complex number {0} is not supported")]
    Complex(String),
    #[error("integer overflow: {0:?}")]
    Overflow(String),
    #[error("illegal number syntax: {0:?}")]
    Syntax(String),
    #[error("hexadecimal floating-point constant {0} is not supported")]
    HexFloat(String),
    #[error("number {0} is out of range")]
    OutOfRange(String),
}

/// A number constant as Go's template parser reads it.
pub(crate) fn parse_number(text: &str) -> Result<NumLit, NumberError> {
    let err = |variant: fn(String) -> NumberError| variant(text.to_string());
    if text.ends_with('i') {
        return Err(err(NumberError::Complex));
    }
    let lower = text.to_ascii_lowercase();
    let hex = lower.trim_start_matches(['+', '-']).starts_with("0x");
    let floaty = if hex {
        lower.contains('p')
    } else {
        lower.contains(['.', 'e'])
    };
    if let Some(i) = parse_go_int(text) {
        return Ok(NumLit {
            text: text.to_string(),
            int: Some(i),
            float: Some(i as f64),
            floaty,
        });
    }
    if !floaty {
        if text
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit() || c == '_')
            && !text.trim_start_matches(['+', '-']).starts_with('0')
        {
            return Err(err(NumberError::Overflow));
        }
        return Err(err(NumberError::Syntax));
    }
    if hex {
        return Err(err(NumberError::HexFloat));
    }
    // Go allows `_` only between digits.
    let b = text.as_bytes();
    let separated = b.iter().enumerate().all(|(i, &c)| {
        c != b'_'
            || (i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit))
    });
    if !separated {
        return Err(err(NumberError::Syntax));
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let f: f64 = clean.parse().map_err(|_| err(NumberError::Syntax))?;
    if !f.is_finite() {
        return Err(err(NumberError::OutOfRange));
    }
    // An integral float also has an integer value (Go's NumberNode.IsInt).
    let int = (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64);
    Ok(NumLit {
        text: text.to_string(),
        int,
        float: Some(f),
        floaty: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_integer_syntax() {
        assert_eq!(parse_go_int("42"), Some(42));
        assert_eq!(parse_go_int("-0x1F"), Some(-31));
        assert_eq!(parse_go_int("0o17"), Some(15));
        assert_eq!(parse_go_int("017"), Some(15));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int("1_000"), Some(1000));
        assert_eq!(parse_go_int("0x_1F"), Some(31));
        assert_eq!(parse_go_int("08"), None);
        assert_eq!(parse_go_int("1__0"), None);
        assert_eq!(parse_go_int("_1"), None);
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("--1"), None);
    }

    #[test]
    fn numbers_have_go_int_and_float_views() {
        let n = parse_number("3.0").unwrap();
        assert_eq!((n.int, n.floaty), (Some(3), true));
        let n = parse_number("1e3").unwrap();
        assert_eq!((n.int, n.float), (Some(1000), Some(1000.0)));
        assert!(parse_number("3.5").unwrap().int.is_none());
        assert!(parse_number("99999999999999999999")
            .unwrap_err()
            .to_string()
            .contains("overflow"));
        assert!(parse_number("1i").is_err());
        assert!(parse_number("0x1p3").is_err());
        assert!(parse_number("-").is_err());
        assert!(parse_number("-._0").is_err());
        assert_eq!(parse_number("1_0.5").unwrap().float, Some(10.5));
    }
}
