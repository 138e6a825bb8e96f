//! HCL1 text → `Raw` tree, using hcl-rs (an HCL2 parser) for the structure.
//!
//! SPIRE re-prints `plugin_data` as HCL1 (its catalog keeps the block as an HCL1 AST and prints
//! it without the outer braces). HCL1 differs from
//! what hcl-rs accepts in ways that real configs hit:
//! - quoted keys (`"key_vault_uri" = "…"`, what SPIRE prints for JSON-format server configs);
//! - strings are literal: `"a${b}c"` is the text `a${b}c`, never a template, and the
//!   escapes are HCL1's (`\x41`, octal, `\a`, …);
//! - newlines are not significant (`a = "x" b = "y"` on one line is fine), objects may
//!   use commas, and keys may repeat (last wins, blocks merge);
//! - identifiers may contain `.` and `-`.
//!
//! So a real HCL1 lexer (string, heredoc and comment aware) runs first and rewrites the
//! text into a normal form hcl-rs parses without surprises:
//! - every key (bare or quoted, block labels included) becomes a synthetic identifier
//!   `_azkv_kN`, mapped back to its original spelling afterwards (so duplicates and
//!   non-identifier names cannot trip hcl-rs);
//! - every string, heredoc and number value becomes a placeholder string `"N"` whose decoded
//!   text we keep (hcl-rs never sees escapes or `${`);
//! - blocks `a "b" { … }` become `a = { b = { … } }`, HCL1's own meaning of a block;
//! - items are separated by our own newlines; source newlines and comments become single
//!   spaces.
//!
//! hcl-rs then checks the structure (brackets, `=`, value placement). Its error offsets are
//! mapped back to the original text, so messages point at what the operator wrote.

use hcl::{Expression, ObjectKey, Structure};

use super::raw::{DecodeError, Raw};

const KEY_PREFIX: &str = "_azkv_k";

/// Deeper nesting than any real config; bounds the recursion in hcl-rs and in our conversion.
const MAX_NESTING: usize = 64;

pub(crate) fn parse(src: &str) -> Result<Vec<(String, Raw)>, DecodeError> {
    let tokens = Lexer::new(src).run()?;
    let rewritten = rewrite(src, &tokens)?;
    let body = hcl::parse(&rewritten.text).map_err(|e| match e {
        hcl::Error::Parse(p) => {
            DecodeError::at(src, rewritten.map_back(p.location().offset()), p.message())
        }
        other => DecodeError(other.to_string()),
    })?;
    let tables = Tables {
        keys: &rewritten.keys,
        literals: &rewritten.literals,
    };
    tables.body(body)
}

// ---------------------------------------------------------------------------------------
// Lexer (HCL1 scanner rules)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident,
    /// A quoted string, decoded with HCL1's unquote rules.
    Str(String),
    /// A heredoc, decoded.
    Heredoc(String),
    Number,
    LBrace,
    RBrace,
    LBrack,
    RBrack,
    Eq,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Byte range in the source.
    start: usize,
    end: usize,
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

type LexResult<T> = Result<T, DecodeError>;

fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!c.is_ascii() && c.is_alphabetic())
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            chars: src.char_indices().collect(),
            pos: 0,
        }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).map(|&(_, c)| c)
    }

    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or(self.src.len(), |&(o, _)| o)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0);
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn err<T>(&self, offset: usize, msg: &str) -> LexResult<T> {
        Err(DecodeError::at(self.src, offset, msg))
    }

    fn run(mut self) -> LexResult<Vec<Token>> {
        let mut tokens = Vec::new();
        // Open brackets (char, offset): unbalanced ones get a clear message here, which
        // hcl-rs would report less helpfully after our rewrite.
        let mut open: Vec<(char, usize)> = Vec::new();
        while let Some(c) = self.peek(0) {
            let start = self.offset();
            let kind = match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.bump();
                    continue;
                }
                '#' => {
                    self.skip_line();
                    continue;
                }
                '/' => {
                    self.comment(start)?;
                    continue;
                }
                '{' | '}' | '[' | ']' | '=' | ',' => {
                    self.bump();
                    match c {
                        '{' | '[' => open.push((c, start)),
                        '}' | ']' => {
                            let opener = if c == '}' { '{' } else { '[' };
                            if open.pop().map(|(o, _)| o) != Some(opener) {
                                return self.err(start, &format!("unexpected '{c}'"));
                            }
                        }
                        _ => {}
                    }
                    match c {
                        '{' => Kind::LBrace,
                        '}' => Kind::RBrace,
                        '[' => Kind::LBrack,
                        ']' => Kind::RBrack,
                        '=' => Kind::Eq,
                        _ => Kind::Comma,
                    }
                }
                '"' => Kind::Str(self.string()?),
                '<' if self.peek(1) == Some('<') => Kind::Heredoc(self.heredoc(start)?),
                c if is_letter(c) => {
                    while self
                        .peek(0)
                        .is_some_and(|d| is_letter(d) || is_digit(d) || d == '-' || d == '.')
                    {
                        self.bump();
                    }
                    Kind::Ident
                }
                c if c.is_ascii_digit()
                    || (c == '-' && self.peek(1).is_some_and(|d| d.is_ascii_digit())) =>
                {
                    self.number(start)?;
                    Kind::Number
                }
                _ => return self.err(start, "illegal char"),
            };
            tokens.push(Token {
                kind,
                start,
                end: self.offset(),
            });
        }
        if let Some(&(c, at)) = open.last() {
            return self.err(at, &format!("unclosed '{c}'"));
        }
        Ok(tokens)
    }

    fn skip_line(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn comment(&mut self, start: usize) -> LexResult<()> {
        match self.peek(1) {
            Some('/') => {
                self.skip_line();
                Ok(())
            }
            Some('*') => {
                self.bump();
                self.bump();
                loop {
                    match self.bump() {
                        None => return self.err(start, "comment not terminated"),
                        Some('*') if self.peek(0) == Some('/') => {
                            self.bump();
                            return Ok(());
                        }
                        Some(_) => {}
                    }
                }
            }
            _ => self.err(start, "expected '/' for comment"),
        }
    }

    fn number(&mut self, start: usize) -> LexResult<()> {
        self.bump();
        while let Some(c) = self.peek(0) {
            let after_exponent = matches!(
                self.chars.get(self.pos.wrapping_sub(1)),
                Some(&(_, 'e' | 'E'))
            );
            if c.is_ascii_alphanumeric() || c == '.' || ((c == '+' || c == '-') && after_exponent) {
                self.bump();
            } else {
                break;
            }
        }
        let text = self.src.get(start..self.offset()).unwrap_or("");
        if valid_number(text) {
            Ok(())
        } else {
            self.err(start, "invalid number")
        }
    }

    /// A quoted string, opening quote at the cursor. Mirrors HCL1's scanner (a newline ends
    /// the literal only outside `${…}`, where quotes do not end it either) and its unquote
    /// (escapes are decoded outside `${…}`; the `${…}` text is kept as written).
    fn string(&mut self) -> LexResult<String> {
        self.bump();
        let mut out: Vec<u8> = Vec::new();
        let mut braces = 0usize;
        loop {
            let at = self.offset();
            let Some(c) = self.bump() else {
                return self.err(at, "literal not terminated");
            };
            if c == '\n' && braces == 0 {
                return self.err(at, "literal not terminated");
            }
            if c == '"' && braces == 0 {
                break;
            }
            if braces == 0 && c == '$' && self.peek(0) == Some('{') {
                self.bump();
                braces = 1;
                out.extend_from_slice(b"${");
                continue;
            }
            if braces > 0 {
                match c {
                    '{' => braces += 1,
                    '}' => braces -= 1,
                    _ => {}
                }
            }
            if c == '\\' {
                let raw_start = at;
                let decoded = self.escape(at)?;
                if braces > 0 {
                    // Inside `${…}` HCL1 keeps the escape as written.
                    let raw = self.src.get(raw_start..self.offset()).unwrap_or("");
                    out.extend_from_slice(raw.as_bytes());
                } else {
                    out.extend_from_slice(&decoded);
                }
                continue;
            }
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        String::from_utf8(out).map_err(|_| {
            DecodeError::at(
                self.src,
                self.offset(),
                "string escapes produce invalid UTF-8",
            )
        })
    }

    /// One escape sequence after its backslash (already consumed; `at` is its offset).
    fn escape(&mut self, at: usize) -> LexResult<Vec<u8>> {
        let Some(c) = self.bump() else {
            return self.err(at, "literal not terminated");
        };
        let simple = match c {
            'a' => Some(0x07u8),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            return Ok(vec![b]);
        }
        match c {
            '0'..='7' => {
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek(0).and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            self.bump();
                            v = v * 8 + d;
                        }
                        None => return self.err(at, "illegal char escape"),
                    }
                }
                match u8::try_from(v) {
                    Ok(b) => Ok(vec![b]),
                    Err(_) => self.err(at, "illegal char escape"),
                }
            }
            'x' => {
                let v = self.hex_digits(at, 2)?;
                // Two hex digits always fit a byte.
                Ok(vec![u8::try_from(v).unwrap_or(0)])
            }
            'u' | 'U' => {
                let v = self.hex_digits(at, if c == 'u' { 4 } else { 8 })?;
                match char::from_u32(v) {
                    Some(ch) => Ok(ch.to_string().into_bytes()),
                    None => self.err(at, "illegal char escape"),
                }
            }
            _ => self.err(at, "illegal char escape"),
        }
    }

    fn hex_digits(&mut self, at: usize, n: usize) -> LexResult<u32> {
        let mut v: u32 = 0;
        for _ in 0..n {
            match self.peek(0).and_then(|d| d.to_digit(16)) {
                Some(d) => {
                    self.bump();
                    v = v.wrapping_mul(16).wrapping_add(d);
                }
                None => return self.err(at, "illegal char escape"),
            }
        }
        Ok(v)
    }

    /// `<<ANCHOR` or `<<-ANCHOR` heredoc at the cursor. The terminator is a line holding only
    /// the anchor (leading whitespace allowed). Each content line keeps its newline; `<<-`
    /// removes the terminator's indentation from every line when all lines carry it (HCL1).
    fn heredoc(&mut self, start: usize) -> LexResult<String> {
        self.bump();
        self.bump();
        let indented = self.peek(0) == Some('-');
        if indented {
            self.bump();
        }
        let anchor_start = self.offset();
        while self.peek(0).is_some_and(|c| is_letter(c) || is_digit(c)) {
            self.bump();
        }
        let anchor = self.src.get(anchor_start..self.offset()).unwrap_or("");
        if self.peek(0) == Some('\r') && self.peek(1) == Some('\n') {
            self.bump();
        }
        match self.peek(0) {
            None => return self.err(start, "heredoc not terminated"),
            Some('\n') => {}
            Some(_) => return self.err(start, "invalid characters in heredoc anchor"),
        }
        if anchor.is_empty() {
            return self.err(start, "zero-length heredoc anchor");
        }
        self.bump();
        let mut lines: Vec<&str> = Vec::new();
        loop {
            if self.peek(0).is_none() {
                return self.err(start, "heredoc not terminated");
            }
            let line_start = self.offset();
            self.skip_line();
            let line = self.src.get(line_start..self.offset()).unwrap_or("");
            let trimmed = line.trim_start_matches([' ', '\t']);
            if trimmed.strip_suffix('\r').unwrap_or(trimmed) == anchor {
                let indent = line.get(..line.len() - trimmed.len()).unwrap_or("");
                return Ok(heredoc_value(&lines, indented, indent));
            }
            lines.push(line);
            // Consume the newline that ended this content line.
            self.bump();
        }
    }
}

fn heredoc_value(lines: &[&str], indented: bool, indent: &str) -> String {
    let strip = indented && lines.iter().all(|l| l.starts_with(indent));
    let mut out = String::new();
    for line in lines {
        let line = if strip {
            line.strip_prefix(indent).unwrap_or(line)
        } else {
            line
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// HCL1 number forms: decimal integers, floats with optional exponent, `0x` hex.
fn valid_number(text: &str) -> bool {
    let t = text.strip_prefix('-').unwrap_or(text);
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (t.get(..i).unwrap_or(""), t.get(i + 1..)),
        None => (t, None),
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        digits(
            e.strip_prefix('+')
                .or_else(|| e.strip_prefix('-'))
                .unwrap_or(e),
        )
    });
    mantissa_ok && exponent_ok
}

// ---------------------------------------------------------------------------------------
// Rewriter: HCL1 tokens → normal-form text for hcl-rs
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(String),
}

struct Rewritten {
    text: String,
    /// (offset in `text`, offset in source, length in source) per emitted piece.
    segments: Vec<(usize, usize, usize)>,
    /// Original spelling of each synthetic key `_azkv_kN`.
    keys: Vec<String>,
    /// Decoded value of each placeholder string `"N"`.
    literals: Vec<Literal>,
    src_len: usize,
}

impl Rewritten {
    fn emit(&mut self, piece: &str, src_start: usize, src_len: usize) {
        self.segments.push((self.text.len(), src_start, src_len));
        self.text.push_str(piece);
        self.text.push(' ');
    }

    fn map_back(&self, offset: usize) -> usize {
        if offset >= self.text.len() {
            return self.src_len;
        }
        let idx = self.segments.partition_point(|&(new, _, _)| new <= offset);
        match idx.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some(&(new, old, len)) => old + (offset - new).min(len.saturating_sub(1)),
            None => 0,
        }
    }
}

enum Ctx {
    /// The top-level body (`closers == 0`) or an object; `closers` is how many `}` our
    /// rewrite must emit for its closing brace (a block with labels opens several).
    Object {
        closers: usize,
        items: usize,
        expect_value: bool,
    },
    List,
}

fn rewrite(src: &str, tokens: &[Token]) -> Result<Rewritten, DecodeError> {
    let mut out = Rewritten {
        text: String::new(),
        segments: Vec::new(),
        keys: Vec::new(),
        literals: Vec::new(),
        src_len: src.len(),
    };
    let mut stack = vec![Ctx::Object {
        closers: 0,
        items: 0,
        expect_value: false,
    }];
    let verbatim = |out: &mut Rewritten, t: &Token| {
        out.emit(
            src.get(t.start..t.end).unwrap_or(""),
            t.start,
            t.end - t.start,
        );
    };
    let placeholder = |out: &mut Rewritten, t: &Token| -> bool {
        let lit = match &t.kind {
            Kind::Str(s) | Kind::Heredoc(s) => Literal::Str(s.clone()),
            Kind::Number => Literal::Num(src.get(t.start..t.end).unwrap_or("").to_owned()),
            _ => return false,
        };
        let text = format!("\"{}\"", out.literals.len());
        out.literals.push(lit);
        out.emit(&text, t.start, t.end - t.start);
        true
    };

    // Nesting hcl-rs will see: source brackets plus the objects that block labels open.
    let depth = |stack: &[Ctx]| -> usize {
        stack
            .iter()
            .map(|c| match c {
                Ctx::Object { closers, .. } => *closers,
                Ctx::List => 1,
            })
            .sum()
    };

    let mut i = 0;
    while let Some(tok) = tokens.get(i) {
        i += 1;
        match stack.last_mut() {
            Some(Ctx::Object {
                expect_value: ev @ true,
                ..
            }) => {
                *ev = false;
                match tok.kind {
                    Kind::LBrace => {
                        verbatim(&mut out, tok);
                        stack.push(Ctx::Object {
                            closers: 1,
                            items: 0,
                            expect_value: false,
                        });
                    }
                    Kind::LBrack => {
                        verbatim(&mut out, tok);
                        stack.push(Ctx::List);
                    }
                    _ => {
                        if !placeholder(&mut out, tok) {
                            verbatim(&mut out, tok);
                        }
                    }
                }
            }
            Some(Ctx::Object {
                closers,
                items,
                expect_value,
            }) => match tok.kind {
                Kind::Ident | Kind::Str(_) => {
                    // A key chain: names (and block labels) up to `=` or `{`.
                    let chain_start = i - 1;
                    while tokens
                        .get(i)
                        .is_some_and(|t| matches!(t.kind, Kind::Ident | Kind::Str(_)))
                    {
                        i += 1;
                    }
                    let chain = tokens.get(chain_start..i).unwrap_or(&[]);
                    let next = tokens.get(i).map(|t| &t.kind);
                    let opens_block = next == Some(&Kind::LBrace);
                    let assigns = next == Some(&Kind::Eq) && chain.len() == 1;
                    if !(opens_block || assigns) {
                        // Not HCL1 either: hand it over unchanged for hcl-rs to reject.
                        for t in chain {
                            verbatim(&mut out, t);
                        }
                        continue;
                    }
                    if *items > 0 {
                        out.emit("\n", tok.start, 0);
                    }
                    *items += 1;
                    for t in chain {
                        let name = match &t.kind {
                            Kind::Str(s) => s.clone(),
                            _ => src.get(t.start..t.end).unwrap_or("").to_owned(),
                        };
                        let ident = format!("{KEY_PREFIX}{}", out.keys.len());
                        out.keys.push(name);
                        out.emit(&ident, t.start, t.end - t.start);
                        if opens_block {
                            out.emit("= {", t.start, 0);
                        }
                    }
                    if let Some(t) = tokens.get(i) {
                        i += 1;
                        if opens_block {
                            let n = chain.len();
                            stack.push(Ctx::Object {
                                closers: n,
                                items: 0,
                                expect_value: false,
                            });
                        } else {
                            verbatim(&mut out, t);
                            *expect_value = true;
                        }
                    }
                }
                Kind::RBrace if *closers > 0 => {
                    let closing = "}".repeat(*closers);
                    out.emit(&closing, tok.start, tok.end - tok.start);
                    stack.pop();
                }
                _ => verbatim(&mut out, tok),
            },
            Some(Ctx::List) => match tok.kind {
                Kind::LBrace => {
                    verbatim(&mut out, tok);
                    stack.push(Ctx::Object {
                        closers: 1,
                        items: 0,
                        expect_value: false,
                    });
                }
                Kind::LBrack => {
                    verbatim(&mut out, tok);
                    stack.push(Ctx::List);
                }
                Kind::RBrack => {
                    verbatim(&mut out, tok);
                    stack.pop();
                }
                _ => {
                    if !placeholder(&mut out, tok) {
                        verbatim(&mut out, tok);
                    }
                }
            },
            None => verbatim(&mut out, tok),
        }
        if depth(&stack) > MAX_NESTING {
            return Err(DecodeError::at(src, tok.start, "nesting too deep"));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// hcl-rs body → Raw
// ---------------------------------------------------------------------------------------

struct Tables<'a> {
    keys: &'a [String],
    literals: &'a [Literal],
}

impl Tables<'_> {
    fn key(&self, ident: &str) -> String {
        ident
            .strip_prefix(KEY_PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.keys.get(n))
            .cloned()
            .unwrap_or_else(|| ident.to_owned())
    }

    fn body(&self, body: hcl::Body) -> Result<Vec<(String, Raw)>, DecodeError> {
        let mut entries = Vec::new();
        for structure in body {
            match structure {
                Structure::Attribute(attr) => {
                    let key = self.key(attr.key.as_str());
                    let value = self.value(&key, attr.expr)?;
                    entries.push((key, value));
                }
                // The rewrite turns every block into an attribute; kept for completeness.
                Structure::Block(block) => {
                    let key = self.key(block.identifier.as_str());
                    let mut value = Raw::Object(self.body(block.body)?);
                    for label in block.labels.into_iter().rev() {
                        value = Raw::Object(vec![(self.key(label.as_str()), value)]);
                    }
                    entries.push((key, value));
                }
            }
        }
        Ok(entries)
    }

    fn value(&self, path: &str, expr: Expression) -> Result<Raw, DecodeError> {
        Ok(match expr {
            Expression::String(s) => {
                match s.parse::<usize>().ok().and_then(|n| self.literals.get(n)) {
                    Some(Literal::Str(v)) => Raw::Str(v.clone()),
                    Some(Literal::Num(v)) => Raw::Num(v.clone()),
                    None => Raw::Str(s),
                }
            }
            Expression::Bool(b) => Raw::Bool(b),
            Expression::Null => Raw::Null,
            Expression::Number(n) => Raw::Num(n.to_string()),
            Expression::Array(items) => Raw::List(
                items
                    .into_iter()
                    .map(|e| self.value(path, e))
                    .collect::<Result<_, _>>()?,
            ),
            Expression::Object(object) => {
                let mut entries = Vec::new();
                for (k, v) in object {
                    let key = match k {
                        ObjectKey::Identifier(id) => self.key(id.as_str()),
                        ObjectKey::Expression(Expression::Variable(v)) => self.key(v.as_str()),
                        _ => return Err(DecodeError(format!("{path}: unsupported object key"))),
                    };
                    let nested = format!("{path}.{key}");
                    let value = self.value(&nested, v)?;
                    entries.push((key, value));
                }
                Raw::Object(entries)
            }
            _ => {
                return Err(DecodeError(format!(
                    "{path}: unsupported value; expected a string, number, boolean, list or object"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Raw {
        Raw::Str(v.to_owned())
    }

    fn obj(entries: &[(&str, Raw)]) -> Raw {
        Raw::Object(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn parse_ok(src: &str) -> Vec<(String, Raw)> {
        match parse(src) {
            Ok(v) => v,
            Err(e) => panic!("parse failed for {src:?}: {e}"),
        }
    }

    fn parse_err(src: &str) -> String {
        match parse(src) {
            Ok(v) => panic!("expected an error for {src:?}, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn spire_printed_quoted_keys() {
        let src = "\"key_vault_uri\" = \"https://example-vault.vault.azure.net/\"\n\n\
\"shared_keys\" = {\n  \"jwt_key_template\" = \"spire-{{ .TrustDomain | replace \\\".\\\" \\\"-\\\" }}-{{ .KeyID }}\"\n\n  \"key_id_extraction_regex\" = \"^spire-[^-]+-(.+)$\"\n}\n";
        assert_eq!(
            parse_ok(src),
            vec![
                (
                    "key_vault_uri".to_owned(),
                    s("https://example-vault.vault.azure.net/")
                ),
                (
                    "shared_keys".to_owned(),
                    obj(&[
                        (
                            "jwt_key_template",
                            s(r#"spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}"#)
                        ),
                        ("key_id_extraction_regex", s("^spire-[^-]+-(.+)$")),
                    ])
                ),
            ]
        );
    }

    #[test]
    fn block_and_assignment_forms_agree() {
        let block = parse_ok("shared_keys {\n  a = \"x\"\n  b = \"y\"\n}\n");
        let assign = parse_ok("shared_keys = {\n  a = \"x\"\n  b = \"y\"\n}\n");
        let one_line = parse_ok("shared_keys { a = \"x\" b = \"y\" }");
        let commas = parse_ok("shared_keys = { a = \"x\", b = \"y\", }");
        let expected = vec![(
            "shared_keys".to_owned(),
            obj(&[("a", s("x")), ("b", s("y"))]),
        )];
        assert_eq!(block, expected);
        assert_eq!(assign, expected);
        assert_eq!(one_line, expected);
        assert_eq!(commas, expected);
    }

    #[test]
    fn newlines_are_not_significant() {
        assert_eq!(
            parse_ok("a = \"x\" b = \"y\"\nc\n=\n\"z\""),
            vec![
                ("a".to_owned(), s("x")),
                ("b".to_owned(), s("y")),
                ("c".to_owned(), s("z"))
            ]
        );
    }

    #[test]
    fn non_identifier_keys_and_duplicates_survive() {
        assert_eq!(
            parse_ok("\"foo bar\" = \"1\"\n\"a\" = \"x\"\na = \"y\"\nx.y-z = true\n\"\" = 2\n"),
            vec![
                ("foo bar".to_owned(), s("1")),
                ("a".to_owned(), s("x")),
                ("a".to_owned(), s("y")),
                ("x.y-z".to_owned(), Raw::Bool(true)),
                ("".to_owned(), Raw::Num("2".into())),
            ]
        );
    }

    #[test]
    fn labelled_blocks_nest_like_hcl1() {
        assert_eq!(
            parse_ok("a \"b\" c { d = 1 }\n"),
            vec![(
                "a".to_owned(),
                obj(&[("b", obj(&[("c", obj(&[("d", Raw::Num("1".into()))]))]))])
            )]
        );
    }

    #[test]
    fn strings_are_literal() {
        let cases: &[(&str, &str)] = &[
            (r##"v = "a${b}c""##, "a${b}c"),
            (r##"v = "a$${b}c""##, "a$${b}c"),
            (r##"v = "%{ if x }y%{ endif }""##, "%{ if x }y%{ endif }"),
            (r##"v = "${.KeyID}""##, "${.KeyID}"),
            (r##"v = "${ foo("x") }""##, r#"${ foo("x") }"#),
            (r##"v = "${a\"b}\n""##, "${a\\\"b}\n"),
            (r##"v = "k=v""##, "k=v"),
            (r##"v = "say \"hi\"""##, "say \"hi\""),
            (r##"v = "{ not a block }""##, "{ not a block }"),
            (r##"v = "# not a comment""##, "# not a comment"),
            (
                r##"v = "// not a comment /* either */""##,
                "// not a comment /* either */",
            ),
            (r##"v = "line1\nline2\ttab\\""##, "line1\nline2\ttab\\"),
            (r##"v = "\x41\101\u00e9\U0001F600\a""##, "AAé😀\u{7}"),
            (r##"v = "^spire-[^-]+-(.+)$""##, "^spire-[^-]+-(.+)$"),
            (r##"v = "C:\\dir\\file""##, r"C:\dir\file"),
            (r##"v = """##, ""),
        ];
        for (src, want) in cases {
            assert_eq!(parse_ok(src), vec![("v".to_owned(), s(want))], "{src}");
        }
    }

    #[test]
    fn comments_are_skipped() {
        let src = "# leading\n// another\n/* block\n comment = \"no\" */\nkey = \"v\" # trailing\nother = \"w\" // trailing\n/* x */ third /* y */ = /* z */ \"t\"\n";
        assert_eq!(
            parse_ok(src),
            vec![
                ("key".to_owned(), s("v")),
                ("other".to_owned(), s("w")),
                ("third".to_owned(), s("t")),
            ]
        );
    }

    #[test]
    fn numbers_bools_lists_and_nested_objects() {
        assert_eq!(
            parse_ok("n = 3\nf = -1.50\nh = 0x1F\ne = 1e5\nb = false\nl = [\"a\", 2, { k = \"v\" }, [],]\n"),
            vec![
                ("n".to_owned(), Raw::Num("3".into())),
                ("f".to_owned(), Raw::Num("-1.50".into())),
                ("h".to_owned(), Raw::Num("0x1F".into())),
                ("e".to_owned(), Raw::Num("1e5".into())),
                ("b".to_owned(), Raw::Bool(false)),
                (
                    "l".to_owned(),
                    Raw::List(vec![
                        s("a"),
                        Raw::Num("2".into()),
                        obj(&[("k", s("v"))]),
                        Raw::List(vec![])
                    ])
                ),
            ]
        );
    }

    #[test]
    fn heredocs() {
        assert_eq!(
            parse_ok("a = <<EOF\nline \"1\" ${x}\n  line 2\nEOF\nb = \"z\"\n"),
            vec![
                ("a".to_owned(), s("line \"1\" ${x}\n  line 2\n")),
                ("b".to_owned(), s("z"))
            ]
        );
        assert_eq!(
            parse_ok("a = <<-EOT\n    x\n      y\n    EOT\n"),
            vec![("a".to_owned(), s("x\n  y\n"))]
        );
        assert_eq!(
            parse_ok("a = <<EOF\r\nw\r\nEOF\r\n"),
            vec![("a".to_owned(), s("w\r\n"))]
        );
        assert_eq!(
            parse_err("a = <<EOF\nno end\n"),
            "1:5: heredoc not terminated"
        );
        assert_eq!(
            parse_err("a = <<EOF x\n"),
            "1:5: invalid characters in heredoc anchor"
        );
    }

    #[test]
    fn lexical_errors_have_positions() {
        assert_eq!(
            parse_err("a = \"open\nb = 1"),
            "1:10: literal not terminated"
        );
        assert_eq!(parse_err("a = \"open"), "1:10: literal not terminated");
        assert_eq!(parse_err("a = \"bad \\q\""), "1:10: illegal char escape");
        assert_eq!(parse_err("a = \"\\uD800\""), "1:6: illegal char escape");
        assert_eq!(parse_err("a = 1\nb = @"), "2:5: illegal char");
        assert_eq!(parse_err("/* open"), "1:1: comment not terminated");
        assert_eq!(parse_err("a = 12abc"), "1:5: invalid number");
        let deep = format!("a = {}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(parse_err(&deep), "1:69: nesting too deep");
        let ok = format!("a = {}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(&ok).is_ok());
        let labels = format!("a {} {{}}", "b ".repeat(70));
        assert!(parse_err(&labels).ends_with("nesting too deep"));
    }

    #[test]
    fn structural_errors_are_mapped_to_the_source() {
        // The missing value is reported where the source has the closing brace.
        let err = parse_err("x {\n  a =\n}\n");
        assert!(err.starts_with("3:1: "), "{err}");
        let err = parse_err("\"X\"");
        assert!(err.starts_with("1:"), "{err}");
        let err = parse_err("a = \"x\", b = \"y\"");
        assert!(err.starts_with("1:8: "), "{err}");
        assert_eq!(parse_err("a = [\"x\""), "1:5: unclosed '['");
        assert_eq!(
            parse_err("shared_keys {\n  a = \"x\"\n"),
            "1:13: unclosed '{'"
        );
        assert_eq!(parse_err("a = \"x\" }"), "1:9: unexpected '}'");
        assert_eq!(parse_err("a = [ }"), "1:7: unexpected '}'");
        let err = parse_err("a = b");
        assert!(err.contains("a: unsupported value"), "{err}");
        let err = parse_err("shared_keys { x = y }");
        assert!(err.contains("shared_keys.x: unsupported value"), "{err}");
        let err = parse_err("a = {}}");
        assert_eq!(err, "1:7: unexpected '}'");
        // hcl-rs reports a value missing at the very end at the attribute's start.
        let err = parse_err("a = \n");
        assert!(err.starts_with("1:1: "), "{err}");
    }

    #[test]
    fn synthetic_names_in_the_source_do_not_collide() {
        assert_eq!(
            parse_ok("_azkv_k1 = \"a\"\n\"x y\" = \"b\"\n"),
            vec![("_azkv_k1".to_owned(), s("a")), ("x y".to_owned(), s("b"))]
        );
    }
}
