//! The function set: Go `text/template` builtins plus the deterministic Sprig v3 functions,
//! with Sprig's argument order (the piped value is the last argument) and semantics.
//! Sprig's non-deterministic functions are refused at parse time, as are the deterministic
//! ones this plugin does not implement.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;

use regex::{Regex, RegexBuilder};

use super::literal::{parse_go_int, Lit};
use super::strcase::{
    abbreviate_full, byte_slice, bytes_to_string, camel_to_lower, delete_white_space, initials,
    swap_case, title, to_camel_case, uncapitalize, wrap_custom,
};
use super::unicode::{go_is_print, go_lower, go_upper};
use super::value::{go_quote, sprint, sprintf, sprintln, strval, Value, MAX_STR};

/// Largest list a single function may produce.
pub(crate) const MAX_LIST: usize = 100_000;

pub(crate) type SprigFn = fn(&[Value]) -> Result<Value, String>;

/// Parameter types, as Go's reflection-based call checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum P {
    S, // string
    I, // int
    B, // bool
    F, // float64
    M, // map[string]interface{}
    A, // interface{}
}

impl P {
    fn type_name(self) -> &'static str {
        match self {
            P::S => "string",
            P::I => "int",
            P::B => "bool",
            P::F => "float64",
            P::M => "map[string]interface {}",
            P::A => "interface {}",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    params: &'static [P],
    variadic: Option<P>,
    pub(crate) f: SprigFn,
}

impl Spec {
    /// Type of the i-th argument.
    pub(crate) fn param(&self, i: usize) -> P {
        self.params
            .get(i)
            .copied()
            .or(self.variadic)
            .unwrap_or(P::A)
    }

    /// `and` / `or` evaluate their arguments lazily.
    pub(crate) fn is_lazy(&self) -> bool {
        self.name == "and" || self.name == "or"
    }
}

pub(crate) enum Lookup {
    Func(&'static Spec),
    NotAllowed,
    Unsupported,
    Unknown,
}

/// Sprig functions whose result depends on time, randomness, the environment or the network
/// (names separated by whitespace).
const NON_DETERMINISTIC: &str = "\
    now ago date date_in_zone dateInZone date_modify dateModify must_date_modify \
    mustDateModify htmlDate htmlDateInZone toDate mustToDate unixEpoch randAlphaNum randAlpha \
    randAscii randNumeric randBytes randInt shuffle uuidv4 env expandenv getHostByName bcrypt \
    htpasswd genPrivateKey genCA genCAWithKey genSelfSignedCert genSelfSignedCertWithKey \
    genSignedCert genSignedCertWithKey buildCustomCert encryptAES";

/// Deterministic functions of Go templates or Sprig that key names have no use for.
const UNSUPPORTED: &str = "\
    call duration durationRound add1f addf subf mulf divf fromJson mustFromJson toJson \
    mustToJson toPrettyJson mustToPrettyJson toRawJson mustToRawJson set unset merge \
    mergeOverwrite mustMerge mustMergeOverwrite semver semverCompare urlParse urlJoin \
    derivePassword decryptAES";

fn listed(names: &str, name: &str) -> bool {
    names.split_whitespace().any(|n| n == name)
}

pub(crate) fn lookup(name: &str) -> Lookup {
    if let Some(spec) = SPECS.iter().find(|s| s.name == name) {
        Lookup::Func(spec)
    } else if listed(NON_DETERMINISTIC, name) {
        Lookup::NotAllowed
    } else if listed(UNSUPPORTED, name) {
        Lookup::Unsupported
    } else {
        Lookup::Unknown
    }
}

pub(crate) fn check_arity(spec: &Spec, n: usize) -> Result<(), String> {
    let k = spec.params.len();
    if spec.variadic.is_some() {
        if n < k {
            return Err(format!(
                "wrong number of args for {}: want at least {k} got {n}",
                spec.name
            ));
        }
    } else if n != k {
        return Err(format!(
            "wrong number of args for {}: want {k} got {n}",
            spec.name
        ));
    }
    Ok(())
}

/// A literal argument converted to the parameter type, as Go's `evalArg` does for constants.
pub(crate) fn literal_arg(p: P, lit: &Lit) -> Result<Value, String> {
    match (p, lit) {
        (P::A, l) => ideal(l),
        (P::S, Lit::Str(s)) => Ok(Value::string(s.as_str())),
        (P::S, l) => Err(format!("expected string; found {}", l.describe())),
        (P::I, Lit::Num(n)) => n
            .int
            .map(Value::Int)
            .ok_or_else(|| format!("expected integer; found {}", n.text)),
        (P::I, l) => Err(format!("expected integer; found {}", l.describe())),
        (P::B, Lit::Bool(b)) => Ok(Value::Bool(*b)),
        (P::B, l) => Err(format!("expected bool; found {}", l.describe())),
        (P::F, Lit::Num(n)) => n
            .float
            .map(Value::Float)
            .ok_or_else(|| format!("expected float; found {}", n.text)),
        (P::F, l) => Err(format!("expected float; found {}", l.describe())),
        (P::M, l) => Err(format!(
            "can't handle {} for arg of type {}",
            l.describe(),
            P::M.type_name()
        )),
    }
}

/// An untyped constant's default type (Go's `idealConstant`).
pub(crate) fn ideal(lit: &Lit) -> Result<Value, String> {
    match lit {
        Lit::Str(s) => Ok(Value::string(s.as_str())),
        Lit::Bool(b) => Ok(Value::Bool(*b)),
        Lit::Num(n) => {
            if n.floaty {
                n.float
                    .map(Value::Float)
                    .ok_or_else(|| format!("{} is not a valid number", n.text))
            } else {
                n.int
                    .map(Value::Int)
                    .ok_or_else(|| format!("{} overflows int", n.text))
            }
        }
    }
}

/// The `nil` literal as an argument.
pub(crate) fn nil_arg(p: P) -> Result<Value, String> {
    match p {
        P::A => Ok(Value::Nil),
        P::M => Ok(Value::map(BTreeMap::new())),
        p => Err(format!("cannot assign nil to {}", p.type_name())),
    }
}

/// A computed value checked against the parameter type (Go's `validateType`).
pub(crate) fn convert(p: P, v: Value) -> Result<Value, String> {
    match (p, v) {
        (P::A, v) => Ok(v),
        (P::S, v @ Value::Str(_))
        | (P::I, v @ Value::Int(_))
        | (P::B, v @ Value::Bool(_))
        | (P::F, v @ Value::Float(_))
        | (P::M, v @ Value::Map(_)) => Ok(v),
        (P::M, Value::Nil) => Ok(Value::map(BTreeMap::new())),
        (p, Value::Nil) => Err(format!("invalid value; expected {}", p.type_name())),
        (p, v) => Err(format!(
            "wrong type for value; expected {}; got {}",
            p.type_name(),
            v.type_name()
        )),
    }
}

// ---- argument accessors (types were checked by the caller; errors are defensive) ------

const BAD_ARG: &str = "internal error: argument of unexpected type";
const NIL_DEREF: &str = "runtime error: invalid memory address or nil pointer dereference";

fn at(a: &[Value], i: usize) -> Result<&Value, String> {
    a.get(i).ok_or_else(|| BAD_ARG.to_string())
}

fn arg(a: &[Value], i: usize) -> Value {
    a.get(i).cloned().unwrap_or(Value::Nil)
}

/// `$name(a, i)`: the i-th argument, of the type its parameter declares.
macro_rules! accessor {
    ($name:ident, $t:ty, $pat:pat => $v:expr) => {
        fn $name(a: &[Value], i: usize) -> Result<$t, String> {
            match a.get(i) {
                Some($pat) => Ok($v),
                _ => Err(BAD_ARG.into()),
            }
        }
    };
}

accessor!(s, &str, Value::Str(s) => s);
accessor!(int, i64, Value::Int(n) => *n);
accessor!(float, f64, Value::Float(f) => *f);
accessor!(boolean, bool, Value::Bool(b) => *b);
accessor!(map_arg, &BTreeMap<String, Value>, Value::Map(m) => m);

fn string(s: impl Into<String>) -> Result<Value, String> {
    let s = s.into();
    check_len(s.len())?;
    Ok(Value::string(s))
}

fn list(v: Vec<Value>) -> Result<Value, String> {
    check_list(v.len())?;
    Ok(Value::list(v))
}

fn check_len(n: usize) -> Result<(), String> {
    if n > MAX_STR {
        Err(format!(
            "result of {n} bytes exceeds the {MAX_STR}-byte limit"
        ))
    } else {
        Ok(())
    }
}

fn check_list(n: usize) -> Result<(), String> {
    if n > MAX_LIST {
        Err(format!(
            "list of {n} items exceeds the {MAX_LIST}-item limit"
        ))
    } else {
        Ok(())
    }
}

/// The i-th argument as the list of a Sprig list function; `what` completes Sprig's error.
fn list_arg<'a>(a: &'a [Value], i: usize, what: &str) -> Result<&'a [Value], String> {
    match at(a, i)? {
        Value::List(l) => Ok(l),
        Value::Nil => Err(NIL_DEREF.into()),
        other => Err(format!("Cannot {what} on type {}", other.kind_name())),
    }
}

fn or_nil(v: Option<&Value>) -> Result<Value, String> {
    Ok(v.cloned().unwrap_or(Value::Nil))
}

fn usize_of(n: i64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("negative count {n}"))
}

// ---- conversions (spf13/cast, strconv) -------------------------------------------------

/// cast's `trimZeroDecimal`: "10.00" -> "10".
fn trim_zero_decimal(s: &str) -> &str {
    let mut found_zero = false;
    for (i, b) in s.bytes().enumerate().rev() {
        match b {
            b'.' if found_zero => return &s[..i],
            b'.' => {}
            b'0' => found_zero = true,
            _ => return s,
        }
    }
    s
}

/// `cast.ToInt64` (errors become 0, as in Sprig).
pub(crate) fn to_int64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => float_to_int(*f),
        Value::Bool(b) => i64::from(*b),
        Value::Str(s) => parse_go_int(trim_zero_decimal(s)).unwrap_or(0),
        _ => 0,
    }
}

/// Go's `int64(f)` as amd64 computes it: out-of-range values and NaN give the minimum.
fn float_to_int(f: f64) -> i64 {
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// `cast.ToFloat64` (errors become 0).
fn to_float64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(s) => {
            let clean: String = s.chars().filter(|&c| c != '_').collect();
            clean.parse().unwrap_or(0.0)
        }
        _ => 0.0,
    }
}

/// Sprig's `strslice` (`toStrings`): nils dropped, elements through `strval`.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l
            .iter()
            .filter(|x| !matches!(x, Value::Nil))
            .map(strval)
            .collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

fn strs_to_list(v: Vec<String>) -> Result<Value, String> {
    list(v.into_iter().map(Value::string).collect())
}

// ---- Go builtins -----------------------------------------------------------------------

/// Go's `and` (`truth` false) and `or` (true): the first argument of that truth, else the last.
fn first_with_truth(a: &[Value], truth: bool) -> Value {
    a.iter()
        .find(|v| v.truth() == truth)
        .or(a.last())
        .cloned()
        .unwrap_or(Value::Nil)
}

fn f_len(a: &[Value]) -> Result<Value, String> {
    let n = match arg(a, 0) {
        Value::Str(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        Value::Nil => return Err("len of nil pointer".into()),
        other => return Err(format!("len of type {}", other.type_name())),
    };
    Ok(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn f_index(a: &[Value]) -> Result<Value, String> {
    let mut item = arg(a, 0);
    if matches!(item, Value::Nil) {
        return Err("index of untyped nil".into());
    }
    for idx in a.iter().skip(1) {
        // A list or string position below `len`.
        let position = |len: usize| match idx {
            Value::Int(i) => usize::try_from(*i)
                .ok()
                .filter(|&u| u < len)
                .ok_or_else(|| format!("index out of range: {i}")),
            Value::Nil => Err("cannot index slice/array with nil".into()),
            other => Err(format!(
                "cannot index slice/array with type {}",
                other.type_name()
            )),
        };
        item = match &item {
            Value::List(l) => l.get(position(l.len())?).cloned().unwrap_or(Value::Nil),
            Value::Str(s) => {
                let byte = s.as_bytes().get(position(s.len())?).copied();
                Value::Int(i64::from(byte.unwrap_or(0)))
            }
            Value::Map(m) => match idx {
                Value::Str(k) => m.get(&**k).cloned().unwrap_or(Value::Nil),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ))
                }
            },
            Value::Nil => return Err("index of nil pointer".into()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

fn compare_err() -> String {
    "incompatible types for comparison".into()
}

/// Go's `eq` for one pair.
fn eq_pair(x: &Value, y: &Value) -> Result<bool, String> {
    use Value::*;
    Ok(match (x, y) {
        (Bool(a), Bool(b)) => a == b,
        (Int(a), Int(b)) => a == b,
        (Float(a), Float(b)) => a == b,
        (Str(a), Str(b)) => a == b,
        (Nil, Nil) => true,
        (Nil, _) | (_, Nil) => false,
        (Data(a), Data(b)) => a == b,
        (List(_) | Map(_) | Data(_), List(_) | Map(_) | Data(_)) => {
            return Err(format!(
                "non-comparable types {}, {}",
                x.type_name(),
                y.type_name()
            ))
        }
        _ => return Err(compare_err()),
    })
}

fn f_eq(a: &[Value]) -> Result<Value, String> {
    let first = arg(a, 0);
    if a.len() < 2 {
        return Err("missing argument for comparison".into());
    }
    for other in a.get(1..).unwrap_or(&[]) {
        if eq_pair(&first, other)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn lt_pair(x: &Value, y: &Value) -> Result<bool, String> {
    use Value::*;
    let basic = |v: &Value| matches!(v, Int(_) | Float(_) | Str(_) | Bool(_));
    if !basic(x) || !basic(y) {
        return Err("invalid type for comparison".into());
    }
    match (x, y) {
        (Int(a), Int(b)) => Ok(a < b),
        (Float(a), Float(b)) => Ok(a < b),
        (Str(a), Str(b)) => Ok(a < b),
        (Bool(_), Bool(_)) => Err("invalid type for comparison".into()),
        _ => Err(compare_err()),
    }
}

fn le(a: &[Value]) -> Result<bool, String> {
    let (x, y) = (arg(a, 0), arg(a, 1));
    Ok(lt_pair(&x, &y)? || eq_pair(&x, &y)?)
}

/// Go's template `evalArgs`: a single string as is, else `fmt.Sprint`.
fn eval_args(a: &[Value]) -> String {
    match a {
        [Value::Str(s)] => s.to_string(),
        _ => sprint(a),
    }
}

fn f_html(a: &[Value]) -> Result<Value, String> {
    let mut out = String::new();
    for c in eval_args(a).chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    string(out)
}

fn f_js(a: &[Value]) -> Result<Value, String> {
    let mut out = String::new();
    for c in eval_args(a).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || (!c.is_ascii() && !go_is_print(c)) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    string(out)
}

fn f_urlquery(a: &[Value]) -> Result<Value, String> {
    let mut out = String::new();
    for b in eval_args(a).bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    string(out)
}

// ---- Sprig strings ---------------------------------------------------------------------

fn f_abbrev(a: &[Value]) -> Result<Value, String> {
    let (w, st) = (int(a, 0)?, s(a, 1)?);
    if w < 4 {
        return string(st);
    }
    string(abbreviate_full(st, 0, w).unwrap_or_default())
}

fn f_abbrevboth(a: &[Value]) -> Result<Value, String> {
    let (left, right, st) = (int(a, 0)?, int(a, 1)?, s(a, 2)?);
    if right < 4 || (left > 0 && right < 7) {
        return string(st);
    }
    string(abbreviate_full(st, left, right).unwrap_or_default())
}

fn f_trunc(a: &[Value]) -> Result<Value, String> {
    let (c, st) = (int(a, 0)?, s(a, 1)?);
    let len = st.len() as i64;
    if c < 0 && len + c > 0 {
        return string(byte_slice(st, (len + c) as usize, st.len()).unwrap_or_default());
    }
    if c >= 0 && len > c {
        return string(byte_slice(st, 0, c as usize).unwrap_or_default());
    }
    string(st)
}

fn f_substr(a: &[Value]) -> Result<Value, String> {
    let (start, end, st) = (int(a, 0)?, int(a, 1)?, s(a, 2)?);
    let len = st.len() as i64;
    let oob =
        || format!("runtime error: slice bounds out of range [{start}:{end}] with length {len}");
    let (from, to) = if start < 0 {
        (0, end)
    } else if end < 0 || end > len {
        (start, len)
    } else {
        (start, end)
    };
    if from > to || to > len || to < 0 {
        return Err(oob());
    }
    string(byte_slice(st, from as usize, to as usize).ok_or_else(oob)?)
}

fn f_repeat(a: &[Value]) -> Result<Value, String> {
    let (count, st) = (int(a, 0)?, s(a, 1)?);
    let count = usize::try_from(count).map_err(|_| "strings: negative Repeat count".to_string())?;
    check_len(count.saturating_mul(st.len()))?;
    string(st.repeat(count))
}

fn f_trim_all(a: &[Value]) -> Result<Value, String> {
    let (cut, st) = (s(a, 0)?, s(a, 1)?);
    // A set, not `cut.contains`: a long cutset would make trimming quadratic.
    let cut: BTreeSet<char> = cut.chars().collect();
    string(st.trim_matches(|c| cut.contains(&c)))
}

fn f_wrap_with(a: &[Value]) -> Result<Value, String> {
    let (l, sep, st) = (int(a, 0)?, s(a, 1)?, s(a, 2)?);
    check_len(
        st.len()
            .saturating_mul(sep.len().max(1))
            .saturating_add(st.len()),
    )?;
    string(wrap_custom(st, l, sep, true))
}

/// Sprig's `quote`, `squote`, `cat`: the non-nil arguments, each through `f`, joined by spaces.
fn join_non_nil(a: &[Value], f: impl Fn(&Value) -> String) -> Result<Value, String> {
    let parts: Vec<String> = a
        .iter()
        .filter(|v| !matches!(v, Value::Nil))
        .map(f)
        .collect();
    string(parts.join(" "))
}

fn indent(spaces: i64, st: &str) -> Result<String, String> {
    let n = usize::try_from(spaces).map_err(|_| "strings: negative Repeat count".to_string())?;
    let lines = st.matches('\n').count() + 1;
    check_len(n.saturating_mul(lines).saturating_add(st.len()))?;
    let pad = " ".repeat(n);
    Ok(format!("{pad}{}", st.replace('\n', &format!("\n{pad}"))))
}

fn f_replace(a: &[Value]) -> Result<Value, String> {
    let (old, new, src) = (s(a, 0)?, s(a, 1)?, s(a, 2)?);
    let matches = if old.is_empty() {
        src.chars().count() + 1
    } else {
        src.matches(old).count()
    };
    check_len(src.len().saturating_add(matches.saturating_mul(new.len())))?;
    string(src.replace(old, new))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn digest(a: &[Value], alg: &'static ring::digest::Algorithm) -> Result<Value, String> {
    string(hex(ring::digest::digest(alg, s(a, 0)?.as_bytes()).as_ref()))
}

fn f_adler32sum(a: &[Value]) -> Result<Value, String> {
    const MOD: u32 = 65521;
    let (mut x, mut y) = (1u32, 0u32);
    for b in s(a, 0)?.bytes() {
        x = (x + u32::from(b)) % MOD;
        y = (y + x) % MOD;
    }
    string(((y << 16) | x).to_string())
}

// ---- Sprig conversions -----------------------------------------------------------------

fn f_atoi(a: &[Value]) -> Result<Value, String> {
    let st = s(a, 0)?;
    // strconv.Atoi: optional sign and decimal digits only.
    let digits = st.strip_prefix(['+', '-']).unwrap_or(st);
    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    Ok(Value::Int(if ok { st.parse().unwrap_or(0) } else { 0 }))
}

fn f_to_decimal(a: &[Value]) -> Result<Value, String> {
    let text = arg(a, 0).to_go_string();
    let digits = text.strip_prefix(['+', '-']).unwrap_or(&text);
    let ok = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let v = if ok {
        i64::from_str_radix(&text, 8).unwrap_or(0)
    } else {
        0
    };
    Ok(Value::Int(v))
}

/// Go's `untilStep`, bounded in size.
fn until_step(start: i64, stop: i64, step: i64) -> Result<Vec<i64>, String> {
    let count: i128 = if stop < start {
        if step >= 0 {
            0
        } else {
            (i128::from(start) - i128::from(stop) + (-i128::from(step)) - 1) / -i128::from(step)
        }
    } else if step <= 0 {
        0
    } else {
        (i128::from(stop) - i128::from(start) + i128::from(step) - 1) / i128::from(step)
    };
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    check_list(count)?;
    // Exactly `count` terms of the arithmetic sequence (no overflow: each lies in range).
    Ok((0..count)
        .map(|k| (i128::from(start) + k as i128 * i128::from(step)) as i64)
        .collect())
}

fn ints(v: Vec<i64>) -> Result<Value, String> {
    list(v.into_iter().map(Value::Int).collect())
}

fn f_seq(a: &[Value]) -> Result<Value, String> {
    let p: Vec<i64> = a
        .iter()
        .map(|v| match v {
            Value::Int(i) => *i,
            _ => 0,
        })
        .collect();
    let nums = match p.as_slice() {
        [end] => {
            let inc = if *end < 1 { -1 } else { 1 };
            until_step(1, end.saturating_add(inc), inc)?
        }
        [start, end] => {
            let step = if end < start { -1 } else { 1 };
            until_step(*start, end.saturating_add(step), step)?
        }
        [start, step, end] => {
            let mut inc = 1;
            if end < start {
                inc = -1;
                if *step > 0 {
                    return string("");
                }
            }
            until_step(*start, end.saturating_add(inc), *step)?
        }
        _ => Vec::new(),
    };
    let parts: Vec<String> = nums.iter().map(i64::to_string).collect();
    string(parts.join(" "))
}

/// Go's `strings.SplitN` (n < 0: all), including the empty-separator explode.
fn go_split(st: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    if sep.is_empty() {
        let chars: Vec<char> = st.chars().collect();
        let l = chars.len();
        let k = if n < 0 || n as u64 > l as u64 {
            l
        } else {
            n as usize
        };
        let mut out: Vec<String> = chars
            .iter()
            .take(k.saturating_sub(1))
            .map(|c| c.to_string())
            .collect();
        if k > 0 {
            out.push(chars[k - 1..].iter().collect());
        }
        return out;
    }
    if n < 0 {
        st.split(sep).map(str::to_string).collect()
    } else {
        st.splitn(usize::try_from(n).unwrap_or(usize::MAX), sep)
            .map(str::to_string)
            .collect()
    }
}

fn split_map(parts: Vec<String>) -> Result<Value, String> {
    check_list(parts.len())?;
    Ok(Value::map(
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("_{i}"), Value::string(p)))
            .collect(),
    ))
}

fn f_join(a: &[Value]) -> Result<Value, String> {
    let sep = s(a, 0)?;
    let parts = strslice(&arg(a, 1));
    let total = parts.iter().map(String::len).sum::<usize>()
        + sep.len().saturating_mul(parts.len().saturating_sub(1));
    check_len(total)?;
    string(parts.join(sep))
}

fn f_sort_alpha(a: &[Value]) -> Result<Value, String> {
    let v = arg(a, 0);
    let mut parts = match &v {
        Value::List(_) => strslice(&v),
        other => vec![strval(other)],
    };
    parts.sort();
    strs_to_list(parts)
}

// ---- Sprig math ------------------------------------------------------------------------

/// Sprig's `div` and `mod` (`op`): Go panics on a zero divisor.
fn int_div(a: &[Value], op: fn(i64, i64) -> i64) -> Result<Value, String> {
    let d = to_int64(&arg(a, 1));
    if d == 0 {
        return Err("runtime error: integer divide by zero".into());
    }
    Ok(Value::Int(op(to_int64(&arg(a, 0)), d)))
}

/// The arguments (through `cast`) folded with `f` from the first.
fn fold_ints(a: &[Value], f: fn(i64, i64) -> i64) -> Result<Value, String> {
    let first = to_int64(&arg(a, 0));
    Ok(Value::Int(a.iter().skip(1).map(to_int64).fold(first, f)))
}

fn fold_floats(a: &[Value], f: fn(f64, f64) -> f64) -> Result<Value, String> {
    let first = to_float64(&arg(a, 0));
    Ok(Value::Float(
        a.iter().skip(1).map(to_float64).fold(first, f),
    ))
}

/// Go's `math.Max` (NaN wins, +0 beats -0); `minf` uses it mirrored, as `-max(-x, -y)`.
fn go_fmax(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

fn f_round(a: &[Value]) -> Result<Value, String> {
    let val = to_float64(&arg(a, 0));
    let places = int(a, 1)? as f64;
    let round_on = match a.get(2) {
        Some(_) => float(a, 2)?,
        None => 0.5,
    };
    let pow = 10f64.powf(places);
    let digit = pow * val;
    let frac = digit.fract();
    let r = if frac >= round_on {
        digit.ceil()
    } else {
        digit.floor()
    };
    Ok(Value::Float(r / pow))
}

// ---- Sprig defaults, reflection, paths, encodings --------------------------------------

/// Go's `path.Clean`.
fn path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let b = p.as_bytes();
    let n = b.len();
    let rooted = b[0] == b'/';
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0usize, 0usize);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    let at = |i: usize| b.get(i).copied();
    while r < n {
        if at(r) == Some(b'/') || (at(r) == Some(b'.') && (r + 1 == n || at(r + 1) == Some(b'/'))) {
            r += 1;
        } else if at(r) == Some(b'.')
            && at(r + 1) == Some(b'.')
            && (r + 2 == n || at(r + 2) == Some(b'/'))
        {
            r += 2;
            if out.len() > dotdot {
                out.pop();
                while out.len() > dotdot && out.last() != Some(&b'/') {
                    out.pop();
                }
                if out.len() > dotdot {
                    // Drop the separator that preceded the removed element.
                    out.pop();
                }
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while let Some(c) = at(r) {
                if c == b'/' {
                    break;
                }
                out.push(c);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return ".".into();
    }
    bytes_to_string(out)
}

fn f_base(a: &[Value]) -> Result<Value, String> {
    let p = s(a, 0)?;
    if p.is_empty() {
        return string(".");
    }
    let p = p.trim_end_matches('/');
    let p = match p.rfind('/') {
        Some(i) => &p[i + 1..],
        None => p,
    };
    string(if p.is_empty() { "/" } else { p })
}

fn f_dir(a: &[Value]) -> Result<Value, String> {
    let p = s(a, 0)?;
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    string(path_clean(dir))
}

fn f_ext(a: &[Value]) -> Result<Value, String> {
    let p = s(a, 0)?;
    for (i, b) in p.bytes().enumerate().rev() {
        if b == b'/' {
            break;
        }
        if b == b'.' {
            return string(&p[i..]);
        }
    }
    string("")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn f_b64enc(a: &[Value]) -> Result<Value, String> {
    string(encode(s(a, 0)?.as_bytes(), B64, 6))
}

/// Standard base64 (`bits` 6) or base32 (`bits` 5) encoding: each output character takes the
/// next `bits` bits (the last zero-filled), `=` pads to whole groups of 4 or 8 characters.
fn encode(src: &[u8], alphabet: &[u8], bits: u32) -> String {
    let group = if bits == 6 { 4 } else { 8 };
    let mask = (1u32 << bits) - 1;
    let mut out = String::with_capacity(src.len() * 8 / bits as usize + group);
    let (mut acc, mut n) = (0u32, 0u32);
    for &b in src {
        acc = (acc << 8) | u32::from(b);
        n += 8;
        while n >= bits {
            n -= bits;
            out.push(char::from(alphabet[((acc >> n) & mask) as usize]));
        }
        acc &= (1 << n) - 1;
    }
    if n > 0 {
        out.push(char::from(alphabet[((acc << (bits - n)) & mask) as usize]));
    }
    while out.len() % group != 0 {
        out.push('=');
    }
    out
}

/// Go's `base64.StdEncoding.DecodeString` (newlines ignored, lenient trailing bits);
/// Err carries the offending input offset.
fn b64_decode(src: &[u8]) -> Result<Vec<u8>, usize> {
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let is_nl = |c: &u8| *c == b'\n' || *c == b'\r';
    // The index of the first non-newline byte from `si` on.
    let skip_nl = |si: usize| si + src.iter().skip(si).take_while(|c| is_nl(c)).count();
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0usize;
    loop {
        let mut dbuf = [0u32; 4];
        let mut dlen = 4;
        let mut j = 0usize;
        while j < 4 {
            let Some(&c) = src.get(si) else {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            };
            si += 1;
            if is_nl(&c) {
                continue;
            }
            if let Some(v) = val(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if c != b'=' {
                return Err(si - 1);
            }
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    si = skip_nl(si);
                    match src.get(si) {
                        None => return Err(src.len()),
                        Some(&b'=') => si += 1,
                        Some(_) => return Err(si - 1),
                    }
                }
                _ => {}
            }
            si = skip_nl(si);
            if si < src.len() {
                return Err(si);
            }
            dlen = j;
            break;
        }
        // The group's 3 bytes, as many as its characters carry whole.
        let v = dbuf.iter().fold(0u32, |acc, &d| (acc << 6) | d);
        out.extend_from_slice(&v.to_be_bytes()[1..1 + dlen * 6 / 8]);
        if dlen < 4 {
            return Ok(out);
        }
    }
}

/// A decoding's result: Sprig returns the error text as the result.
fn decoded(r: Result<Vec<u8>, usize>, encoding: &str) -> Result<Value, String> {
    string(match r {
        Ok(b) => bytes_to_string(b),
        Err(at) => format!("illegal {encoding} data at input byte {at}"),
    })
}

fn f_b32enc(a: &[Value]) -> Result<Value, String> {
    string(encode(s(a, 0)?.as_bytes(), B32, 5))
}

/// Go's `base32.StdEncoding.DecodeString` (newlines stripped first).
fn b32_decode(input: &[u8]) -> Result<Vec<u8>, usize> {
    let src: Vec<u8> = input
        .iter()
        .copied()
        .filter(|&c| c != b'\n' && c != b'\r')
        .collect();
    let val = |c: u8| B32.iter().position(|&x| x == c).map(|p| p as u64);
    let olen = src.len();
    let mut out = Vec::new();
    let mut rest: &[u8] = &src;
    let mut end = false;
    while !rest.is_empty() && !end {
        let mut dbuf = [0u64; 8];
        let mut dlen = 8;
        let mut j = 0usize;
        while j < 8 {
            let Some((&c, tail)) = rest.split_first() else {
                return Err(olen - j);
            };
            rest = tail;
            if c == b'=' && j >= 2 && rest.len() < 8 {
                if rest.len() + j < 7 {
                    return Err(olen);
                }
                for k in 0..(7 - j) {
                    if rest.get(k).is_some_and(|&x| x != b'=') {
                        return Err(olen - rest.len() + k - 1);
                    }
                }
                dlen = j;
                end = true;
                if matches!(dlen, 1 | 3 | 6) {
                    return Err(olen - rest.len() - 1);
                }
                break;
            }
            match val(c) {
                Some(v) => dbuf[j] = v,
                None => return Err(olen - rest.len() - 1),
            }
            j += 1;
        }
        // The group's 5 bytes, as many as its characters carry whole.
        let v = dbuf.iter().fold(0u64, |acc, &d| (acc << 5) | d);
        out.extend_from_slice(&v.to_be_bytes()[3..3 + dlen * 5 / 8]);
    }
    Ok(out)
}

// ---- Sprig lists and dicts -------------------------------------------------------------

fn f_dict(a: &[Value]) -> Result<Value, String> {
    let mut m = BTreeMap::new();
    for pair in a.chunks(2) {
        let Some(k) = pair.first() else { continue };
        let key = strval(k);
        let v = pair.get(1).cloned().unwrap_or_else(|| Value::string(""));
        m.insert(key, v);
    }
    Ok(Value::map(m))
}

fn f_pluck(a: &[Value]) -> Result<Value, String> {
    let name = s(a, 0)?;
    let mut out = Vec::new();
    for i in 1..a.len() {
        if let Some(v) = map_arg(a, i)?.get(name) {
            out.push(v.clone());
        }
    }
    list(out)
}

fn f_keys(a: &[Value]) -> Result<Value, String> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        out.extend(map_arg(a, i)?.keys().map(|k| Value::string(k.as_str())));
    }
    list(out)
}

fn f_pick(a: &[Value]) -> Result<Value, String> {
    let m = map_arg(a, 0)?;
    let mut out = BTreeMap::new();
    for i in 1..a.len() {
        let k = s(a, i)?;
        if let Some(v) = m.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Ok(Value::map(out))
}

fn f_omit(a: &[Value]) -> Result<Value, String> {
    let mut m = map_arg(a, 0)?.clone();
    for i in 1..a.len() {
        m.remove(s(a, i)?);
    }
    Ok(Value::map(m))
}

fn f_dig(a: &[Value]) -> Result<Value, String> {
    if a.len() < 3 {
        return Err("dig needs at least three arguments".into());
    }
    // Go's failed type assertion to a map.
    let as_map = |v: Value| match v {
        Value::Map(m) => Ok(m),
        other => Err(format!(
            "interface conversion: interface {{}} is {}, not map[string]interface {{}}",
            other.type_name()
        )),
    };
    let default = arg(a, a.len() - 2);
    let mut cur = as_map(at(a, a.len() - 1)?.clone())?;
    let keys = a.get(..a.len() - 2).unwrap_or(&[]);
    for (i, k) in keys.iter().enumerate() {
        let Value::Str(k) = k else {
            return Err(format!(
                "interface conversion: interface {{}} is {}, not string",
                k.type_name()
            ));
        };
        let Some(step) = cur.get(&**k).cloned() else {
            return Ok(default);
        };
        if i == keys.len() - 1 {
            return Ok(step);
        }
        cur = as_map(step)?;
    }
    Ok(default)
}

fn f_push(a: &[Value]) -> Result<Value, String> {
    let mut l = list_arg(a, 0, "push")?.to_vec();
    l.push(arg(a, 1));
    list(l)
}

fn f_prepend(a: &[Value]) -> Result<Value, String> {
    let l = list_arg(a, 0, "prepend")?;
    let mut out = Vec::with_capacity(l.len() + 1);
    out.push(arg(a, 1));
    out.extend_from_slice(l);
    list(out)
}

fn f_reverse(a: &[Value]) -> Result<Value, String> {
    let mut l = list_arg(a, 0, "find reverse")?.to_vec();
    l.reverse();
    list(l)
}

fn f_uniq(a: &[Value]) -> Result<Value, String> {
    let l = list_arg(a, 0, "find uniq")?;
    let mut out: Vec<Value> = Vec::new();
    for v in l {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    list(out)
}

fn f_without(a: &[Value]) -> Result<Value, String> {
    let l = list_arg(a, 0, "find without")?;
    let omit = a.get(1..).unwrap_or(&[]);
    list(l.iter().filter(|v| !omit.contains(v)).cloned().collect())
}

fn f_has(a: &[Value]) -> Result<Value, String> {
    let needle = arg(a, 0);
    match at(a, 1)? {
        Value::Nil => Ok(Value::Bool(false)),
        _ => Ok(Value::Bool(list_arg(a, 1, "find has")?.contains(&needle))),
    }
}

fn f_slice(a: &[Value]) -> Result<Value, String> {
    let l = match at(a, 0)? {
        Value::List(l) => l,
        Value::Nil => return Err(NIL_DEREF.into()),
        other => {
            return Err(format!(
                "list should be type of slice or array but {}",
                other.kind_name()
            ))
        }
    };
    if l.is_empty() {
        return Ok(Value::Nil);
    }
    let start = a.get(1).map_or(0, to_int64);
    let end = a.get(2).map_or(l.len() as i64, to_int64);
    let range = usize::try_from(start)
        .ok()
        .zip(usize::try_from(end).ok())
        .filter(|(s, e)| s <= e && *e <= l.len())
        .ok_or("reflect: slice index out of range")?;
    list(l.get(range.0..range.1).unwrap_or(&[]).to_vec())
}

fn f_concat(a: &[Value]) -> Result<Value, String> {
    let mut out = Vec::new();
    for v in a {
        match v {
            Value::List(l) => {
                check_list(out.len() + l.len())?;
                out.extend_from_slice(l);
            }
            Value::Nil => return Err(NIL_DEREF.into()),
            other => return Err(format!("Cannot concat type {} as list", other.kind_name())),
        }
    }
    list(out)
}

fn f_chunk(a: &[Value]) -> Result<Value, String> {
    let size = int(a, 0)?;
    let l = match at(a, 1)? {
        Value::List(l) => l,
        Value::Nil => return Err(NIL_DEREF.into()),
        other => return Err(format!("Cannot chunk type {}", other.kind_name())),
    };
    let size = usize_of(size)
        .ok()
        .filter(|&n| n > 0)
        .ok_or("chunk size must be positive")?;
    list(l.chunks(size).map(|c| Value::list(c.to_vec())).collect())
}

// ---- Sprig regular expressions ---------------------------------------------------------

/// Largest compiled program of one pattern (the `regex` default is 10 MiB): matching costs up
/// to the text's length times the program's size, and key-name patterns are tiny.
const REGEX_SIZE_LIMIT: usize = 256 << 10;
/// Most patterns one render keeps compiled; further ones are compiled at each use.
const REGEX_CACHE_ENTRIES: usize = 64;

/// A compiled pattern and its weight: roughly the number of states matching may track per
/// byte of text (counted repetitions multiply), what a match costs per byte at worst.
pub(crate) struct Pattern {
    re: Regex,
    weight: usize,
}

impl std::ops::Deref for Pattern {
    type Target = Regex;
    fn deref(&self) -> &Regex {
        &self.re
    }
}

type Compiled = Result<Rc<Pattern>, String>;

thread_local! {
    /// The patterns compiled by the render running on this thread (see `RegexScope`).
    static REGEXES: RefCell<Option<HashMap<String, Compiled>>> = const { RefCell::new(None) };
    /// Patterns compiled on this thread so far (tests check that the cache is used).
    static COMPILED: Cell<u64> = const { Cell::new(0) };
}

/// Keeps the regular expressions a render compiles until it ends: Sprig compiles the pattern
/// at each call, which in a loop would dominate the work. Per render, so nothing stays
/// behind in a worker thread.
pub(crate) struct RegexScope(());

impl RegexScope {
    pub(crate) fn enter() -> Self {
        REGEXES.with(|r| *r.borrow_mut() = Some(HashMap::new()));
        RegexScope(())
    }
}

impl Drop for RegexScope {
    fn drop(&mut self) {
        let _ = REGEXES.try_with(|r| r.borrow_mut().take());
    }
}

/// How many patterns this thread has compiled.
#[cfg(test)]
pub(crate) fn regexes_compiled() -> u64 {
    COMPILED.with(Cell::get)
}

/// `pattern` as this render compiled it before (errors too), if it did.
fn cached(pattern: &str) -> Option<Compiled> {
    REGEXES.with(|r| r.borrow().as_ref().and_then(|m| m.get(pattern).cloned()))
}

/// `pattern` compiled, from the render's cache when it was compiled before.
fn compile(pattern: &str) -> Compiled {
    if let Some(hit) = cached(pattern) {
        return hit;
    }
    COMPILED.with(|c| c.set(c.get() + 1));
    let compiled = compile_uncached(pattern).map(Rc::new);
    REGEXES.with(|r| {
        if let Some(m) = r.borrow_mut().as_mut() {
            if m.len() < REGEX_CACHE_ENTRIES {
                m.insert(pattern.to_string(), compiled.clone());
            }
        }
    });
    compiled
}

/// The weight of `pattern` (see `Pattern`), from parsing it only; 1 if it does not parse.
fn pattern_weight(pattern: &str) -> usize {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map_or(1, |h| weight(&h))
}

/// The weight of a parsed pattern (see `Pattern`).
fn weight(h: &regex_syntax::hir::Hir) -> usize {
    use regex_syntax::hir::HirKind;
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) | HirKind::Class(_) => 1,
        HirKind::Literal(l) => l.0.len().max(1),
        HirKind::Repetition(r) => {
            let times = r.max.unwrap_or(r.min.saturating_add(1)).max(1);
            (times as usize).saturating_mul(weight(&r.sub))
        }
        HirKind::Capture(c) => weight(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs
            .iter()
            .fold(1usize, |acc, h| acc.saturating_add(weight(h))),
    }
}

fn compile_uncached(pattern: &str) -> Result<Pattern, String> {
    let re = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let detail = e
                .to_string()
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid pattern")
                .trim()
                .trim_start_matches("error: ")
                .to_string();
            format!("regexp: Compile({}): {detail}", go_quote(pattern, false))
        })?;
    Ok(Pattern {
        re,
        weight: pattern_weight(pattern),
    })
}

fn f_regex_find_all(a: &[Value]) -> Result<Value, String> {
    let (r, text, n) = (compile(s(a, 0)?)?, s(a, 1)?, int(a, 2)?);
    let limit = if n < 0 { usize::MAX } else { usize_of(n)? };
    strs_to_list(
        r.find_iter(text)
            .take(limit)
            .map(|m| m.as_str().to_string())
            .collect(),
    )
}

/// Go's `ReplaceAllString` (with `$1`/`${name}` expansion) or `ReplaceAllLiteralString`.
fn regex_replace(a: &[Value], literal: bool) -> Result<Value, String> {
    let (r, text, repl) = (compile(s(a, 0)?)?, s(a, 1)?, s(a, 2)?);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in r.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&text[last..m.start()]);
        if literal {
            out.push_str(repl);
        } else {
            caps.expand(repl, &mut out);
        }
        last = m.end();
        check_len(out.len())?;
    }
    out.push_str(&text[last..]);
    string(out)
}

/// Go's `Regexp.Split`.
fn f_regex_split(a: &[Value]) -> Result<Value, String> {
    let (r, text, n) = (compile(s(a, 0)?)?, s(a, 1)?, int(a, 2)?);
    if n == 0 {
        return list(Vec::new());
    }
    if !r.as_str().is_empty() && text.is_empty() {
        return strs_to_list(vec![String::new()]);
    }
    let limit = if n < 0 { usize::MAX } else { usize_of(n)? };
    let mut parts = Vec::new();
    let (mut beg, mut end) = (0usize, 0usize);
    for m in r.find_iter(text).take(limit) {
        if n > 0 && parts.len() == limit - 1 {
            break;
        }
        end = m.start();
        if m.end() != 0 {
            parts.push(text[beg..end].to_string());
        }
        beg = m.end();
    }
    if end != text.len() {
        parts.push(text[beg..].to_string());
    }
    strs_to_list(parts)
}

fn f_regex_quote_meta(a: &[Value]) -> Result<Value, String> {
    let mut out = String::new();
    for c in s(a, 0)?.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    string(out)
}

// ---- cost ------------------------------------------------------------------------------

/// The work a call to `spec` with `args` does, in bytes, charged before it runs
/// (`exec.rs`): what it reads, and more for the functions whose work grows faster than that.
/// Values are measured up to `cap` only (the caller cannot pay for more).
pub(crate) fn work(spec: &Spec, args: &[Value], cap: usize) -> usize {
    let size = |v: &Value| v.size_within(cap).unwrap_or(usize::MAX);
    let read = args
        .iter()
        .fold(0usize, |acc, v| acc.saturating_add(size(v)));
    let first = args.first().map_or(0, size);
    let items = match args.first() {
        Some(Value::List(l)) => l.len(),
        _ => 0,
    };
    let text = match args.get(1) {
        Some(Value::Str(t)) => t.len(),
        _ => 0,
    };
    let extra = match spec.name {
        // Each element is compared with those kept so far.
        "uniq" | "mustUniq" => items.saturating_mul(read),
        // Each element is compared with each value to omit.
        "without" | "mustWithout" => {
            let omitted = args.len().saturating_sub(1);
            items.saturating_mul(omitted).saturating_add(
                items
                    .saturating_mul(read.saturating_sub(first))
                    .min(omitted.saturating_mul(first)),
            )
        }
        // n log n comparisons.
        "sortAlpha" => read.saturating_mul((usize::BITS - items.leading_zeros()) as usize),
        // The pattern-matching functions: all `regex` ones but `regexQuoteMeta`.
        name if name.starts_with("regex") && name != "regexQuoteMeta"
            || name.starts_with("mustRegex") =>
        {
            match args.first() {
                Some(Value::Str(pattern)) => regex_work(pattern, text),
                _ => 0,
            }
        }
        _ => 0,
    };
    read.saturating_add(extra)
}

/// What matching `pattern` against `text_len` bytes may cost: every state of the pattern at
/// every byte, plus a per-byte share of the match bookkeeping; and compiling it first, when
/// this render has not compiled it yet (charged before it compiles: compiling is the costly
/// part of a short match).
fn regex_work(pattern: &str, text_len: usize) -> usize {
    /// Per byte of text, whatever the pattern (finding and expanding matches).
    const PER_BYTE: usize = 32;
    /// Compiling: a fixed part, and a part per unit of weight or pattern byte.
    const COMPILE_BASE: usize = 64 << 10;
    const COMPILE_PER_UNIT: usize = 1 << 10;
    let (weight, compile) = match cached(pattern) {
        Some(compiled) => (compiled.as_ref().map_or(0, |p| p.weight), 0),
        None => {
            let weight = pattern_weight(pattern);
            let units = weight.saturating_add(pattern.len());
            (
                weight,
                COMPILE_BASE.saturating_add(units.saturating_mul(COMPILE_PER_UNIT)),
            )
        }
    };
    text_len
        .saturating_mul(weight.saturating_add(PER_BYTE))
        .saturating_add(compile)
}

// ---- the table -------------------------------------------------------------------------

/// The table's rows: `"name" | "alias": [parameter types, ...variadic type] => function`, the
/// function a `fn` or, for the short ones, a closure.
macro_rules! specs {
    ($($($name:literal)|+: $sig:tt => $f:expr,)*) => {
        &[$($(spec!($name, $sig, $f),)+)*]
    };
}

macro_rules! spec {
    ($name:literal, [$($p:ident,)* ...$v:ident], $f:expr) => {
        Spec { name: $name, params: &[$(P::$p),*], variadic: Some(P::$v), f: $f }
    };
    ($name:literal, [$($p:ident),*], $f:expr) => {
        Spec { name: $name, params: &[$(P::$p),*], variadic: None, f: $f }
    };
}

static SPECS: &[Spec] = specs![
    // Go text/template builtins (Sprig's `slice` replaces Go's).
    "and": [A, ...A] => |a| Ok(first_with_truth(a, false)),
    "or": [A, ...A] => |a| Ok(first_with_truth(a, true)),
    "not": [A] => |a| Ok(Value::Bool(!arg(a, 0).truth())),
    "len": [A] => f_len,
    "index": [A, ...A] => f_index,
    "print": [...A] => |a| string(sprint(a)),
    "printf": [S, ...A] => |a| string(sprintf(s(a, 0)?, a.get(1..).unwrap_or(&[]))),
    "println": [...A] => |a| string(sprintln(a)),
    "eq": [A, ...A] => f_eq,
    "ne": [A, A] => |a| Ok(Value::Bool(!eq_pair(&arg(a, 0), &arg(a, 1))?)),
    "lt": [A, A] => |a| Ok(Value::Bool(lt_pair(&arg(a, 0), &arg(a, 1))?)),
    "le": [A, A] => |a| Ok(Value::Bool(le(a)?)),
    "gt": [A, A] => |a| Ok(Value::Bool(!le(a)?)),
    "ge": [A, A] => |a| Ok(Value::Bool(!lt_pair(&arg(a, 0), &arg(a, 1))?)),
    "html": [...A] => f_html,
    "js": [...A] => f_js,
    "urlquery": [...A] => f_urlquery,
    // Sprig strings.
    "hello": [] => |_| string("Hello!"),
    "abbrev": [I, S] => f_abbrev,
    "abbrevboth": [I, I, S] => f_abbrevboth,
    "trunc": [I, S] => f_trunc,
    "trim": [S] => |a| string(s(a, 0)?.trim()),
    "upper": [S] => |a| string(go_upper(s(a, 0)?)),
    "lower": [S] => |a| string(go_lower(s(a, 0)?)),
    "title": [S] => |a| string(title(s(a, 0)?)),
    "untitle": [S] => |a| string(uncapitalize(s(a, 0)?)),
    "substr": [I, I, S] => f_substr,
    "repeat": [I, S] => f_repeat,
    "trimall" | "trimAll": [S, S] => f_trim_all,
    "trimSuffix": [S, S] => |a| {
        let (suf, st) = (s(a, 0)?, s(a, 1)?);
        string(st.strip_suffix(suf).unwrap_or(st))
    },
    "trimPrefix": [S, S] => |a| {
        let (pre, st) = (s(a, 0)?, s(a, 1)?);
        string(st.strip_prefix(pre).unwrap_or(st))
    },
    "nospace": [S] => |a| string(delete_white_space(s(a, 0)?)),
    "initials": [S] => |a| string(initials(s(a, 0)?)),
    "swapcase": [S] => |a| string(swap_case(s(a, 0)?)),
    "snakecase": [S] => |a| string(camel_to_lower(s(a, 0)?, '_')),
    "camelcase": [S] => |a| string(to_camel_case(s(a, 0)?, true)),
    "kebabcase": [S] => |a| string(camel_to_lower(s(a, 0)?, '-')),
    "wrap": [I, S] => |a| string(wrap_custom(s(a, 1)?, int(a, 0)?, "", false)),
    "wrapWith": [I, S, S] => f_wrap_with,
    "contains": [S, S] => |a| Ok(Value::Bool(s(a, 1)?.contains(s(a, 0)?))),
    "hasPrefix": [S, S] => |a| Ok(Value::Bool(s(a, 1)?.starts_with(s(a, 0)?))),
    "hasSuffix": [S, S] => |a| Ok(Value::Bool(s(a, 1)?.ends_with(s(a, 0)?))),
    "quote": [...A] => |a| join_non_nil(a, |v| go_quote(&strval(v), false)),
    "squote": [...A] => |a| join_non_nil(a, |v| format!("'{}'", v.to_go_string())),
    "cat": [...A] => |a| join_non_nil(a, Value::to_go_string),
    "indent": [I, S] => |a| string(indent(int(a, 0)?, s(a, 1)?)?),
    "nindent": [I, S] => |a| string(format!("\n{}", indent(int(a, 0)?, s(a, 1)?)?)),
    "replace": [S, S, S] => f_replace,
    "plural": [S, S, I] => |a| {
        let (one, many, count) = (s(a, 0)?, s(a, 1)?, int(a, 2)?);
        string(if count == 1 { one } else { many })
    },
    "sha1sum": [S] => |a| digest(a, &ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
    "sha256sum": [S] => |a| digest(a, &ring::digest::SHA256),
    "sha512sum": [S] => |a| digest(a, &ring::digest::SHA512),
    "adler32sum": [S] => f_adler32sum,
    "toString": [A] => |a| string(strval(&arg(a, 0))),
    // Sprig conversions.
    "atoi": [S] => f_atoi,
    "int" | "int64": [A] => |a| Ok(Value::Int(to_int64(&arg(a, 0)))),
    "float64": [A] => |a| Ok(Value::Float(to_float64(&arg(a, 0)))),
    "toDecimal": [A] => f_to_decimal,
    "seq": [...I] => f_seq,
    "split": [S, S] => |a| split_map(go_split(s(a, 1)?, s(a, 0)?, -1)),
    "splitList": [S, S] => |a| strs_to_list(go_split(s(a, 1)?, s(a, 0)?, -1)),
    "splitn": [S, I, S] => |a| split_map(go_split(s(a, 2)?, s(a, 0)?, int(a, 1)?)),
    "toStrings": [A] => |a| strs_to_list(strslice(&arg(a, 0))),
    "join": [S, A] => f_join,
    "sortAlpha": [A] => f_sort_alpha,
    // Sprig math.
    "until": [I] => |a| {
        let count = int(a, 0)?;
        ints(until_step(0, count, if count < 0 { -1 } else { 1 })?)
    },
    "untilStep": [I, I, I] => |a| ints(until_step(int(a, 0)?, int(a, 1)?, int(a, 2)?)?),
    "add1": [A] => |a| Ok(Value::Int(to_int64(&arg(a, 0)).wrapping_add(1))),
    "add": [...A] => |a| Ok(Value::Int(a.iter().map(to_int64).fold(0, i64::wrapping_add))),
    "sub": [A, A] => |a| {
        Ok(Value::Int(to_int64(&arg(a, 0)).wrapping_sub(to_int64(&arg(a, 1)))))
    },
    "div": [A, A] => |a| int_div(a, i64::wrapping_div),
    "mod": [A, A] => |a| int_div(a, i64::wrapping_rem),
    "mul": [A, ...A] => |a| fold_ints(a, i64::wrapping_mul),
    "biggest" | "max": [A, ...A] => |a| fold_ints(a, i64::max),
    "min": [A, ...A] => |a| fold_ints(a, i64::min),
    "maxf": [A, ...A] => |a| fold_floats(a, go_fmax),
    "minf": [A, ...A] => |a| fold_floats(a, |x, y| -go_fmax(-x, -y)),
    "ceil": [A] => |a| Ok(Value::Float(to_float64(&arg(a, 0)).ceil())),
    "floor": [A] => |a| Ok(Value::Float(to_float64(&arg(a, 0)).floor())),
    "round": [A, I, ...F] => f_round,
    // Sprig defaults and flow control.
    "default": [A, ...A] => |a| {
        Ok(a.get(1).filter(|v| v.truth()).cloned().unwrap_or_else(|| arg(a, 0)))
    },
    "empty": [A] => |a| Ok(Value::Bool(!arg(a, 0).truth())),
    "coalesce": [...A] => |a| or_nil(a.iter().find(|v| v.truth())),
    "all": [...A] => |a| Ok(Value::Bool(a.iter().all(Value::truth))),
    "any": [...A] => |a| Ok(Value::Bool(a.iter().any(Value::truth))),
    "compact" | "mustCompact": [A] => |a| {
        list(list_arg(a, 0, "compact")?.iter().filter(|v| v.truth()).cloned().collect())
    },
    "ternary": [A, A, B] => |a| Ok(arg(a, if boolean(a, 2)? { 0 } else { 1 })),
    "deepCopy" | "mustDeepCopy": [A] => |a| Ok(arg(a, 0)),
    "fail": [S] => |a| Err(s(a, 0)?.to_string()),
    // Sprig reflection.
    "typeOf": [A] => |a| string(arg(a, 0).type_name()),
    "typeIs": [S, A] => |a| Ok(Value::Bool(s(a, 0)? == arg(a, 1).type_name())),
    "typeIsLike": [S, A] => |a| {
        let (target, t) = (s(a, 0)?, arg(a, 1).type_name());
        Ok(Value::Bool(target == t || format!("*{target}") == t))
    },
    "kindOf": [A] => |a| string(arg(a, 0).kind_name()),
    "kindIs": [S, A] => |a| Ok(Value::Bool(s(a, 0)? == arg(a, 1).kind_name())),
    "deepEqual": [A, A] => |a| Ok(Value::Bool(arg(a, 0) == arg(a, 1))),
    // Sprig paths (filepath and path agree on Unix).
    "base" | "osBase": [S] => f_base,
    "dir" | "osDir": [S] => f_dir,
    "clean" | "osClean": [S] => |a| string(path_clean(s(a, 0)?)),
    "ext" | "osExt": [S] => f_ext,
    "isAbs" | "osIsAbs": [S] => |a| Ok(Value::Bool(s(a, 0)?.starts_with('/'))),
    // Sprig encodings.
    "b64enc": [S] => f_b64enc,
    "b64dec": [S] => |a| decoded(b64_decode(s(a, 0)?.as_bytes()), "base64"),
    "b32enc": [S] => f_b32enc,
    "b32dec": [S] => |a| decoded(b32_decode(s(a, 0)?.as_bytes()), "base32"),
    // Sprig lists and dicts.
    "list" | "tuple": [...A] => |a| list(a.to_vec()),
    "dict": [...A] => f_dict,
    "get": [M, S] => |a| {
        Ok(map_arg(a, 0)?.get(s(a, 1)?).cloned().unwrap_or_else(|| Value::string("")))
    },
    "hasKey": [M, S] => |a| Ok(Value::Bool(map_arg(a, 0)?.contains_key(s(a, 1)?))),
    "pluck": [S, ...M] => f_pluck,
    "keys": [...M] => f_keys,
    "pick": [M, ...S] => f_pick,
    "omit": [M, ...S] => f_omit,
    "values": [M] => |a| list(map_arg(a, 0)?.values().cloned().collect()),
    "dig": [...A] => f_dig,
    "append" | "push" | "mustAppend" | "mustPush": [A, A] => f_push,
    "prepend" | "mustPrepend": [A, A] => f_prepend,
    "first" | "mustFirst": [A] => |a| or_nil(list_arg(a, 0, "find first")?.first()),
    "last" | "mustLast": [A] => |a| or_nil(list_arg(a, 0, "find last")?.last()),
    "rest" | "mustRest": [A] => |a| {
        list(list_arg(a, 0, "find rest")?.get(1..).unwrap_or(&[]).to_vec())
    },
    "initial" | "mustInitial": [A] => |a| {
        let l = list_arg(a, 0, "find initial")?;
        list(l.get(..l.len().saturating_sub(1)).unwrap_or(&[]).to_vec())
    },
    "reverse" | "mustReverse": [A] => f_reverse,
    "uniq" | "mustUniq": [A] => f_uniq,
    "without" | "mustWithout": [A, ...A] => f_without,
    "has" | "mustHas": [A, A] => f_has,
    "slice" | "mustSlice": [A, ...A] => f_slice,
    "concat": [...A] => f_concat,
    "chunk" | "mustChunk": [I, A] => f_chunk,
    // Sprig regular expressions (Rust's `regex` is RE2-syntax like Go's `regexp`).
    "regexMatch": [S, S] => |a| {
        Ok(Value::Bool(compile(s(a, 0)?).is_ok_and(|r| s(a, 1).is_ok_and(|t| r.is_match(t)))))
    },
    "mustRegexMatch": [S, S] => |a| Ok(Value::Bool(compile(s(a, 0)?)?.is_match(s(a, 1)?))),
    "regexFindAll" | "mustRegexFindAll": [S, S, I] => f_regex_find_all,
    "regexFind" | "mustRegexFind": [S, S] => |a| {
        let (r, text) = (compile(s(a, 0)?)?, s(a, 1)?);
        string(r.find(text).map_or("", |m| m.as_str()))
    },
    "regexReplaceAll" | "mustRegexReplaceAll": [S, S, S] => |a| regex_replace(a, false),
    "regexReplaceAllLiteral" | "mustRegexReplaceAllLiteral": [S, S, S] => |a| {
        regex_replace(a, true)
    },
    "regexSplit" | "mustRegexSplit": [S, S, I] => f_regex_split,
    "regexQuoteMeta": [S] => f_regex_quote_meta,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_in_exactly_one_category() {
        for (i, spec) in SPECS.iter().enumerate() {
            assert!(
                !SPECS[..i].iter().any(|o| o.name == spec.name),
                "duplicate {}",
                spec.name
            );
            assert!(!listed(NON_DETERMINISTIC, spec.name), "{}", spec.name);
            assert!(!listed(UNSUPPORTED, spec.name), "{}", spec.name);
        }
        for name in NON_DETERMINISTIC.split_whitespace() {
            assert!(!listed(UNSUPPORTED, name), "{name}");
        }
    }

    #[test]
    fn cast_conversions() {
        assert_eq!(to_int64(&Value::string("42")), 42);
        assert_eq!(to_int64(&Value::string("0x10")), 16);
        assert_eq!(to_int64(&Value::string("10.00")), 10);
        assert_eq!(to_int64(&Value::string("10.5")), 0);
        assert_eq!(to_int64(&Value::string("nope")), 0);
        assert_eq!(to_int64(&Value::Float(3.9)), 3);
        assert_eq!(to_int64(&Value::Bool(true)), 1);
        assert_eq!(to_int64(&Value::Nil), 0);
        assert_eq!(trim_zero_decimal("10."), "10.");
    }

    #[test]
    fn go_base64_decoding() {
        assert_eq!(b64_decode(b"aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(b64_decode(b"aGVs\nbG8="), Ok(b"hello".to_vec()));
        assert_eq!(b64_decode(b"aGVsbA=="), Ok(b"hell".to_vec()));
        assert_eq!(b64_decode(b""), Ok(vec![]));
        assert_eq!(b64_decode(b"aGVsbG8"), Err(4));
        assert_eq!(b64_decode(b"a!=="), Err(1));
        assert_eq!(b64_decode(b"aGVsbA==x"), Err(8));
        assert_eq!(b64_decode(b"a==="), Err(1));
    }

    #[test]
    fn go_base32_round_trip() {
        for input in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let enc = f_b32enc(&[Value::string(input)]).unwrap();
            let Value::Str(e) = &enc else { panic!() };
            assert_eq!(
                b32_decode(e.as_bytes()),
                Ok(input.as_bytes().to_vec()),
                "{input}"
            );
        }
        assert_eq!(
            f_b32enc(&[Value::string("foobar")]).unwrap(),
            Value::string("MZXW6YTBOI======")
        );
        assert!(b32_decode(b"MZXW6YTBOI=====").is_err());
        assert!(b32_decode(b"M1======").is_err());
    }

    #[test]
    fn go_path_clean() {
        for (input, want) in [
            ("", "."),
            ("a/c", "a/c"),
            ("a//c", "a/c"),
            ("a/c/.", "a/c"),
            ("a/c/b/..", "a/c"),
            ("/../a/c", "/a/c"),
            ("../../a", "../../a"),
            ("a/../..", ".."),
            ("/a/b/../../..", "/"),
            ("abc/def/../../..", ".."),
        ] {
            assert_eq!(path_clean(input), want, "{input}");
        }
    }
}
