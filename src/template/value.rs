//! Runtime values of the key-name template engine, and Go `fmt`-compatible printing
//! (`%v`, `Sprint`, `Sprintf`, `strconv.Quote`), so rendered names match the Go plugin.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::unicode::go_is_print;

/// A template value. Strings and containers are reference counted so that variable reads
/// and pipelines never copy large data.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// Go's untyped nil / missing value.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<Vec<Value>>),
    Map(Rc<BTreeMap<String, Value>>),
    /// The template's root data (`.TrustDomain`, `.KeyID`, `.ServerID`).
    Data(Rc<Data>),
}

/// Root data of a key-name template, in the field order of the Go plugin's struct.
#[derive(Debug, PartialEq)]
pub(crate) struct Data {
    pub(crate) trust_domain: String,
    pub(crate) key_id: String,
    pub(crate) server_id: String,
}

impl Data {
    /// Field lookup by Go field name.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        match name {
            "TrustDomain" => Some(&self.trust_domain),
            "KeyID" => Some(&self.key_id),
            "ServerID" => Some(&self.server_id),
            _ => None,
        }
    }
}

/// Names of the root data fields, for error messages and static checks.
pub(crate) const DATA_FIELDS: [&str; 3] = ["TrustDomain", "KeyID", "ServerID"];

/// Deepest nesting of lists and maps a function may return. Deeper values are refused when
/// made, so that walking, printing, comparing and dropping a value never recurses deep enough
/// to overflow the stack (`$x = list $x` in a loop would otherwise nest thousands deep).
pub(crate) const MAX_DEPTH: usize = 100;

/// Formatting stops once its output passes this (the caller then reports the result as too
/// large): a width applied to each element of a long list cannot build gigabytes first.
const FORMAT_LIMIT: usize = MAX_STR;

/// Largest string a single function may produce.
pub(crate) const MAX_STR: usize = 1 << 20;

impl Value {
    pub(crate) fn string(s: impl Into<Rc<str>>) -> Value {
        Value::Str(s.into())
    }

    pub(crate) fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }

    pub(crate) fn map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(m))
    }

    /// Go's `%T` spelling of the value's type.
    pub(crate) fn type_name(&self) -> &'static str {
        self.names().0
    }

    /// Go's `reflect.Kind` spelling.
    pub(crate) fn kind_name(&self) -> &'static str {
        self.names().1
    }

    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Value::Nil => ("<nil>", "invalid"),
            Value::Bool(_) => ("bool", "bool"),
            Value::Int(_) => ("int", "int"),
            Value::Float(_) => ("float64", "float64"),
            Value::Str(_) => ("string", "string"),
            Value::List(_) => ("[]interface {}", "slice"),
            Value::Map(_) => ("map[string]interface {}", "map"),
            Value::Data(_) => ("keyNameData", "struct"),
        }
    }

    /// Go template truth (`if`, `with`, `and`, `or`, `not`); Sprig's `empty` is its negation.
    pub(crate) fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Data(_) => true,
        }
    }

    /// Rough footprint in bytes, used to bound the work a template may do: what walking the
    /// value visits (each element costs `ELEMENT` plus its text), so a part shared by several
    /// lists counts each time. The walk stops once the count passes `cap` (the result is then
    /// above `cap`), so sharing cannot make measuring itself expensive. `None` when lists and
    /// maps nest deeper than `MAX_DEPTH`.
    pub(crate) fn size_within(&self, cap: usize) -> Option<usize> {
        /// Per element: about a `Value`'s size, and what printing a number costs.
        const ELEMENT: usize = 16;
        fn walk(v: &Value, depth: usize, cap: usize, acc: &mut usize) -> Option<()> {
            // Each child with what its key costs (map keys are elements with text too).
            let children: Box<dyn Iterator<Item = (usize, &Value)>> = match v {
                Value::List(l) => Box::new(l.iter().map(|x| (0, x))),
                Value::Map(m) => Box::new(m.iter().map(|(k, x)| (k.len() + ELEMENT, x))),
                other => {
                    let text = if let Value::Str(s) = other {
                        s.len()
                    } else {
                        0
                    };
                    *acc = acc.saturating_add(text + ELEMENT);
                    return Some(());
                }
            };
            if depth >= MAX_DEPTH {
                return None;
            }
            *acc = acc.saturating_add(ELEMENT);
            for (key, x) in children {
                if *acc > cap {
                    break;
                }
                *acc = acc.saturating_add(key);
                walk(x, depth + 1, cap, acc)?;
            }
            Some(())
        }
        let mut acc = 0;
        walk(self, 0, cap, &mut acc)?;
        Some(acc)
    }

    /// Go's `fmt.Sprint(v)` (the `%v` verb without flags).
    pub(crate) fn to_go_string(&self) -> String {
        let mut out = String::new();
        format_value(&mut out, 'v', &FmtSpec::default(), self);
        out
    }
}

/// Sprig's `strval`: strings as they are, anything else through `%v`.
pub(crate) fn strval(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        other => other.to_go_string(),
    }
}

/// `fmt.Sprint`: operands are separated by a space when neither side is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    join_formatted(args, |x, y| {
        !matches!(x, Value::Str(_)) && !matches!(y, Value::Str(_))
    })
}

/// `fmt.Sprintln`: operands always separated by spaces, newline appended.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = join_formatted(args, |_, _| true);
    out.push('\n');
    out
}

/// The operands with `%v`, a space between two of them where `space` says so.
fn join_formatted(args: &[Value], space: fn(&Value, &Value) -> bool) -> String {
    let mut out = String::new();
    let mut prev: Option<&Value> = None;
    for a in args {
        if out.len() > FORMAT_LIMIT {
            break;
        }
        if prev.is_some_and(|p| space(p, a)) {
            out.push(' ');
        }
        format_value(&mut out, 'v', &FmtSpec::default(), a);
        prev = Some(a);
    }
    out
}

/// Flags, width and precision of one `fmt` directive.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FmtSpec {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's limit on widths and precisions (`%!(BADWIDTH)` beyond it); also keeps output bounded.
const FMT_MAX_NUM: usize = 1_000_000;

/// `fmt.Sprintf` with Go's verbs (`v s d q x X o O b c U t e E f F g G %`), flags
/// (`+ - # space 0`), width and precision (including `*`), and Go's error notations
/// (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA ...)`, `%!(NOVERB)`).
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut argi = 0usize;
    let mut rest = format;
    while !rest.is_empty() && out.len() <= FORMAT_LIMIT {
        let Some(pct) = rest.find('%') else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..pct]);
        rest = &rest[pct + 1..];
        let mut spec = FmtSpec::default();
        // Flags.
        while let Some(c) = rest.chars().next() {
            match c {
                '+' => spec.plus = true,
                '-' => {
                    spec.minus = true;
                    spec.zero = false;
                }
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = !spec.minus,
                _ => break,
            }
            rest = &rest[1..];
        }
        // Width.
        // A `*` takes an int operand no larger than the limit.
        let star = |argi: &mut usize| {
            *argi += 1;
            match args.get(*argi - 1) {
                Some(Value::Int(n)) if n.unsigned_abs() <= FMT_MAX_NUM as u64 => Some(*n),
                _ => None,
            }
        };
        if let Some(after) = rest.strip_prefix('*') {
            rest = after;
            match star(&mut argi) {
                Some(n) => {
                    if n < 0 {
                        spec.minus = true;
                        spec.zero = false;
                    }
                    spec.width = usize::try_from(n.unsigned_abs()).ok();
                }
                None => out.push_str("%!(BADWIDTH)"),
            }
        } else {
            let (n, used) = parse_num(rest);
            rest = &rest[used..];
            match n {
                Some(n) if n <= FMT_MAX_NUM => spec.width = Some(n),
                Some(_) => out.push_str("%!(BADWIDTH)"),
                None => {}
            }
        }
        // Precision.
        if let Some(after) = rest.strip_prefix('.') {
            rest = after;
            if let Some(after) = rest.strip_prefix('*') {
                rest = after;
                match star(&mut argi) {
                    Some(n) if n >= 0 => spec.prec = usize::try_from(n).ok(),
                    _ => out.push_str("%!(BADPREC)"),
                }
            } else {
                let (n, used) = parse_num(rest);
                rest = &rest[used..];
                match n {
                    Some(n) if n > FMT_MAX_NUM => out.push_str("%!(BADPREC)"),
                    Some(n) => spec.prec = Some(n),
                    None => spec.prec = Some(0),
                }
            }
        }
        let Some(verb) = rest.chars().next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        rest = &rest[verb.len_utf8()..];
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(argi) {
            None => {
                out.push_str("%!");
                out.push(verb);
                out.push_str("(MISSING)");
            }
            Some(arg) => format_value(&mut out, verb, &spec, arg),
        }
        argi += 1;
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[argi..].iter().enumerate() {
            if out.len() > FORMAT_LIMIT {
                break;
            }
            if i > 0 {
                out.push_str(", ");
            }
            push_typed(&mut out, &FmtSpec::default(), a);
        }
        out.push(')');
    }
    out
}

/// Leading decimal digits of `s`: (value, bytes used). Saturates instead of overflowing.
fn parse_num(s: &str) -> (Option<usize>, usize) {
    let used = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s.bytes().take(used).fold(0usize, |n, b| {
        n.saturating_mul(10).saturating_add(usize::from(b - b'0'))
    });
    ((used > 0).then_some(n), used)
}

/// One operand formatted with one verb, as Go's `fmt` printValue does.
pub(crate) fn format_value(out: &mut String, verb: char, spec: &FmtSpec, v: &Value) {
    match v {
        Value::Nil => match verb {
            'v' => pad(out, "<nil>", spec),
            _ => bad_verb(out, verb, spec, v),
        },
        Value::Bool(b) => match verb {
            't' | 'v' => pad(out, if *b { "true" } else { "false" }, spec),
            _ => bad_verb(out, verb, spec, v),
        },
        Value::Int(n) => format_int(out, verb, spec, *n, v),
        Value::Float(f) => format_float(out, verb, spec, *f, v),
        Value::Str(s) => format_str(out, verb, spec, s, v),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if out.len() > FORMAT_LIMIT {
                    return;
                }
                if i > 0 {
                    out.push(' ');
                }
                format_value(out, verb, spec, item);
            }
            out.push(']');
        }
        Value::Map(m) => {
            // Go's fmt prints maps sorted by key.
            out.push_str("map[");
            for (i, (k, val)) in m.iter().enumerate() {
                if out.len() > FORMAT_LIMIT {
                    return;
                }
                if i > 0 {
                    out.push(' ');
                }
                format_str(out, verb, spec, k, &Value::string(k.as_str()));
                out.push(':');
                format_value(out, verb, spec, val);
            }
            out.push(']');
        }
        Value::Data(d) => {
            out.push('{');
            let fields = [
                ("TrustDomain", &d.trust_domain),
                ("KeyID", &d.key_id),
                ("ServerID", &d.server_id),
            ];
            for (i, (name, val)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if spec.plus && verb == 'v' {
                    out.push_str(name);
                    out.push(':');
                }
                format_str(out, verb, spec, val, &Value::string(val.as_str()));
            }
            out.push('}');
        }
    }
}

/// Go's `%!verb(type=value)`; the value is printed with `%v` and the directive's flags.
fn bad_verb(out: &mut String, verb: char, spec: &FmtSpec, v: &Value) {
    out.push_str("%!");
    out.push(verb);
    out.push('(');
    push_typed(out, spec, v);
    out.push(')');
}

/// `type=value` in Go's error notations, or just `<nil>`.
fn push_typed(out: &mut String, spec: &FmtSpec, v: &Value) {
    if matches!(v, Value::Nil) {
        out.push_str("<nil>");
    } else {
        out.push_str(v.type_name());
        out.push('=');
        format_value(out, 'v', spec, v);
    }
}

/// Pads `s` to the width (counted in runes, like Go): zeros on the left with the `0` flag,
/// else spaces.
fn pad(out: &mut String, s: &str, spec: &FmtSpec) {
    let len = s.chars().count();
    let fill = spec.width.unwrap_or(0).saturating_sub(len);
    if !spec.minus {
        let c = if spec.zero { '0' } else { ' ' };
        out.extend(std::iter::repeat_n(c, fill));
    }
    out.push_str(s);
    if spec.minus {
        out.extend(std::iter::repeat_n(' ', fill));
    }
}

/// Pads a number: zeros go between the sign/prefix and the digits when the `0` flag is set.
fn pad_number(out: &mut String, sign: &str, body: &str, spec: &FmtSpec, zero_ok: bool) {
    let len = sign.chars().count() + body.chars().count();
    let width = spec.width.unwrap_or(0);
    if spec.zero && zero_ok && !spec.minus && width > len {
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', width - len));
        out.push_str(body);
    } else {
        pad(
            out,
            &format!("{sign}{body}"),
            &FmtSpec {
                zero: false,
                ..*spec
            },
        );
    }
}

fn sign_of(neg: bool, spec: &FmtSpec) -> &'static str {
    if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn format_int(out: &mut String, verb: char, spec: &FmtSpec, n: i64, v: &Value) {
    let neg = n < 0;
    let mag = n.unsigned_abs();
    let (digits, prefix) = match verb {
        'v' | 'd' => (mag.to_string(), ""),
        'b' => (format!("{mag:b}"), "0b"),
        'o' => (format!("{mag:o}"), "0"),
        'O' => (format!("{mag:o}"), "0o"),
        'x' => (format!("{mag:x}"), "0x"),
        'X' => (format!("{mag:X}"), "0X"),
        'c' | 'q' => {
            let c = u32::try_from(n).ok().and_then(char::from_u32);
            let c = c.unwrap_or('\u{FFFD}');
            let s = if verb == 'c' {
                c.to_string()
            } else {
                go_quote_rune(c)
            };
            pad(out, &s, spec);
            return;
        }
        'U' => {
            // Go prints the value as unsigned.
            pad(out, &format!("U+{:04X}", n as u64), spec);
            return;
        }
        _ => {
            bad_verb(out, verb, spec, v);
            return;
        }
    };
    let mut body = String::new();
    if spec.sharp || verb == 'O' {
        // `%#o` only adds a leading zero when there is not one already.
        if !(verb == 'o' && digits.starts_with('0')) && verb != 'v' && verb != 'd' {
            body.push_str(prefix);
        }
    }
    match spec.prec {
        // Go prints nothing for a zero value with explicit zero precision.
        Some(0) if mag == 0 => {}
        Some(p) if p > digits.len() => {
            body.extend(std::iter::repeat_n('0', p - digits.len()));
            body.push_str(&digits);
        }
        _ => body.push_str(&digits),
    }
    pad_number(out, sign_of(neg, spec), &body, spec, spec.prec.is_none());
}

fn format_float(out: &mut String, verb: char, spec: &FmtSpec, f: f64, v: &Value) {
    let known = match verb {
        'v' | 'g' | 'G' | 'e' | 'E' | 'f' | 'F' => true,
        'x' | 'X' | 'b' => f.is_finite(),
        _ => false,
    };
    if !known {
        return bad_verb(out, verb, spec, v);
    }
    // Go never zero-pads infinities and NaN.
    let spaces = FmtSpec {
        zero: false,
        ..*spec
    };
    let neg = f.is_sign_negative();
    if f.is_nan() {
        return pad(out, "NaN", &spaces);
    } else if f.is_infinite() {
        return pad(out, if neg { "-Inf" } else { "+Inf" }, &spaces);
    }
    let body = match verb {
        'v' | 'g' | 'G' => fmt_g(f.abs(), spec.prec),
        'e' | 'E' => fmt_e(f.abs(), spec.prec.unwrap_or(6)),
        'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), f.abs()),
        'x' | 'X' => fmt_hex_float(f.abs()),
        _ => fmt_binary_float(f.abs()),
    };
    // The upper-case verbs (`G`, `E`, `X`) print their letters in upper case too.
    let body = if verb.is_ascii_uppercase() {
        body.to_uppercase()
    } else {
        body
    };
    pad_number(out, sign_of(neg, spec), &body, spec, true);
}

fn format_str(out: &mut String, verb: char, spec: &FmtSpec, s: &str, v: &Value) {
    match verb {
        'v' | 's' => {
            let cut: String = s.chars().take(spec.prec.unwrap_or(usize::MAX)).collect();
            pad(out, &cut, spec);
        }
        'q' => pad(out, &go_quote(s, spec.plus), spec),
        'x' | 'X' => {
            let mut h = String::new();
            let bytes = match spec.prec {
                Some(p) => &s.as_bytes()[..p.min(s.len())],
                None => s.as_bytes(),
            };
            for (i, b) in bytes.iter().enumerate() {
                if spec.space && i > 0 {
                    h.push(' ');
                }
                if spec.sharp && (i == 0 || spec.space) {
                    h.push_str("0x");
                }
                h.push_str(&format!("{b:02x}"));
            }
            if verb == 'X' {
                h = h.to_uppercase();
            }
            pad(out, &h, spec);
        }
        _ => bad_verb(out, verb, spec, v),
    }
}

/// Decimal digits (no trailing zeros, at least one) and decimal point position of `x >= 0`,
/// shortest round-trip when `prec` is None, else rounded to `prec` significant digits.
fn float_digits(x: f64, prec: Option<usize>) -> (String, i64) {
    if x == 0.0 {
        return ("0".to_string(), 1);
    }
    let s = match prec {
        None => format!("{x:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, x),
    };
    let (mant, exp) = split_exp(&s);
    let mut digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exp + 1)
}

/// Mantissa and exponent of Rust's `{:e}` output.
fn split_exp(s: &str) -> (&str, i64) {
    let (mant, exp) = s.split_once('e').unwrap_or((s, "0"));
    (mant, exp.parse().unwrap_or(0))
}

/// Go's `%g` (and `%v` when `prec` is None) for finite `x >= 0`.
fn fmt_g(x: f64, prec: Option<usize>) -> String {
    let (digits, dp) = float_digits(x, prec);
    let nd = digits.len() as i64;
    let eprec = match prec {
        // Shortest formatting switches to exponent form from 1e+06 on (Go's rule).
        None => 6,
        Some(p) => {
            let p = p.max(1) as i64;
            if p > nd && nd >= dp {
                nd
            } else {
                p
            }
        }
    };
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        let mut s = String::new();
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        push_exponent(&mut s, 'e', exp);
        s
    } else if dp <= 0 {
        format!("0.{}{}", "0".repeat(dp.unsigned_abs() as usize), digits)
    } else if dp >= nd {
        format!("{}{}", digits, "0".repeat((dp - nd) as usize))
    } else {
        let (a, b) = digits.split_at(dp as usize);
        format!("{a}.{b}")
    }
}

/// Go's `%e` for finite `x >= 0`: at least two exponent digits.
fn fmt_e(x: f64, prec: usize) -> String {
    let s = format!("{x:.prec$e}");
    let (mant, exp) = split_exp(&s);
    let mut out = mant.to_string();
    push_exponent(&mut out, 'e', exp);
    out
}

/// Go's `%x` on a float `x >= 0` (shortest hexadecimal mantissa).
fn fmt_hex_float(x: f64) -> String {
    if x == 0.0 {
        return "0x0p+00".into();
    }
    let bits = x.to_bits();
    let mut exp = ((bits >> 52) & 0x7ff) as i64;
    let mut mant = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        // Subnormal: normalize so the leading bit sits at bit 52.
        exp = -1022;
        while mant & (1u64 << 52) == 0 {
            mant <<= 1;
            exp -= 1;
        }
    } else {
        mant |= 1u64 << 52;
        exp -= 1023;
    }
    let frac = format!("{:013x}", mant & ((1u64 << 52) - 1));
    let frac = frac.trim_end_matches('0');
    let mut s = String::from("0x1");
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    push_exponent(&mut s, 'p', exp);
    s
}

/// Go's `%b` on a float `x >= 0`: integer mantissa and binary exponent.
fn fmt_binary_float(x: f64) -> String {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let frac = bits & ((1u64 << 52) - 1);
    let (mant, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    format!("{mant}p{}{e}", if e >= 0 { "+" } else { "" })
}

/// `e` or `p`, the sign and at least two digits.
fn push_exponent(s: &mut String, marker: char, exp: i64) {
    s.push(marker);
    s.push(if exp < 0 { '-' } else { '+' });
    let a = exp.unsigned_abs();
    if a < 10 {
        s.push('0');
    }
    s.push_str(&a.to_string());
}

/// `strconv.Quote` (or `QuoteToASCII` when `ascii_only`).
pub(crate) fn go_quote(s: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"', ascii_only);
    }
    out.push('"');
    out
}

/// `strconv.QuoteRune`.
pub(crate) fn go_quote_rune(c: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'', false);
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char, ascii_only: bool) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    let printable = if ascii_only {
        c.is_ascii() && go_is_print(c)
    } else {
        go_is_print(c)
    };
    if printable {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::string(v)
    }

    #[test]
    fn go_float_printing() {
        let cases: &[(f64, &str)] = &[
            (3.5, "3.5"),
            (3.0, "3"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (f, want) in cases {
            assert_eq!(Value::Float(*f).to_go_string(), *want, "{f}");
        }
    }

    #[test]
    fn sprintf_verbs() {
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("%s-%s", vec![s("a"), s("b")], "a-b"),
            ("%d", vec![Value::Int(-42)], "-42"),
            ("%05d", vec![Value::Int(-42)], "-0042"),
            ("%x", vec![Value::Int(255)], "ff"),
            ("%X", vec![s("hi")], "6869"),
            ("%#x", vec![Value::Int(255)], "0xff"),
            ("%q", vec![s("a\"b\n")], "\"a\\\"b\\n\""),
            (
                "%v",
                vec![Value::list(vec![s("a"), Value::Int(1)])],
                "[a 1]",
            ),
            ("%5s|%-5s|", vec![s("ab"), s("cd")], "   ab|cd   |"),
            ("%.2s", vec![s("hello")], "he"),
            ("%.3f", vec![Value::Float(1.23456)], "1.235"),
            ("%e", vec![Value::Float(1234.5678)], "1.234568e+03"),
            ("%g", vec![Value::Float(1e21)], "1e+21"),
            ("%t", vec![Value::Bool(true)], "true"),
            ("%c", vec![Value::Int(65)], "A"),
            ("%U", vec![Value::Int(65)], "U+0041"),
            ("%d", vec![s("x")], "%!d(string=x)"),
            ("%s", vec![Value::Int(5)], "%!s(int=5)"),
            ("%s %s", vec![s("a")], "a %!s(MISSING)"),
            (
                "%s",
                vec![s("a"), Value::Int(1), Value::Nil],
                "a%!(EXTRA int=1, <nil>)",
            ),
            ("%v %s", vec![Value::Nil, Value::Nil], "<nil> %!s(<nil>)"),
            ("100%%", vec![], "100%"),
            ("%", vec![], "%!(NOVERB)"),
            ("%*d", vec![Value::Int(4), Value::Int(7)], "   7"),
            ("%+d", vec![Value::Int(7)], "+7"),
            ("%U", vec![Value::Int(-1)], "U+FFFFFFFFFFFFFFFF"),
            ("%x", vec![Value::Float(3.5)], "0x1.cp+01"),
            ("%X", vec![Value::Float(-0.5)], "-0X1P-01"),
            ("%b", vec![Value::Float(1.0)], "4503599627370496p-52"),
            ("%05d", vec![s("hi")], "%!d(string=000hi)"),
            ("%-5d|", vec![Value::Bool(true)], "%!d(bool=true )|"),
            ("%.3s", vec![Value::Float(1.23456)], "%!s(float64=1.23)"),
            ("%08.3f", vec![Value::Float(f64::INFINITY)], "    +Inf"),
        ];
        for (f, args, want) in cases {
            assert_eq!(sprintf(f, &args), want, "format {f:?}");
        }
    }

    #[test]
    fn sprint_spacing_follows_go() {
        assert_eq!(sprint(&[s("a"), s("b")]), "ab");
        assert_eq!(sprint(&[Value::Int(1), Value::Int(2)]), "1 2");
        assert_eq!(sprint(&[s("a"), Value::Int(2), s("c")]), "a2c");
        assert_eq!(sprintln(&[s("a"), s("b")]), "a b\n");
    }

    #[test]
    fn quote_escapes_like_strconv() {
        assert_eq!(go_quote("héllo", false), "\"héllo\"");
        assert_eq!(go_quote("héllo", true), "\"h\\u00e9llo\"");
        assert_eq!(go_quote("\u{1}\u{7f}", false), "\"\\x01\\x7f\"");
        assert_eq!(go_quote_rune('\''), "'\\''");
    }

    #[test]
    fn huge_width_is_refused_not_allocated() {
        assert_eq!(sprintf("%999999999d", &[Value::Int(1)]), "%!(BADWIDTH)1");
    }
}
