//! HCL1 text → `Raw` tree: HCL1's scanner rules, then one recursive-descent pass.
//!
//! SPIRE re-prints `plugin_data` as HCL1 (its catalog keeps the block as an HCL1 AST and prints
//! it without the outer braces). What real configs rely on:
//! - quoted keys (`"key_vault_uri" = "…"`, what SPIRE prints for JSON-format server configs);
//! - strings are literal: `"a${b}c"` is the text `a${b}c`, never a template, and the
//!   escapes are HCL1's (`\x41`, octal, `\a`, …);
//! - newlines are not significant (`a = "x" b = "y"` on one line is fine), objects may
//!   use commas, and keys may repeat (kept in order; the decoder applies "last wins" and
//!   "blocks merge");
//! - identifiers may contain `.` and `-`;
//! - a block `a "b" { … }` means `a = { b = { … } }`.
//!
//! Syntax errors come first; a value we cannot represent (an expression such as `x`) is
//! reported only when the whole text parses.
//!
//! Not hcl-rs: it parses HCL2, which refuses quoted keys and reads `${` as a template, so
//! using it took a rewrite of the text into synthetic HCL2 and a map back, more code than
//! this parser.

use super::raw::{DecodeError, Raw};

/// Deeper nesting than any real config; bounds the parser's recursion.
const MAX_NESTING: usize = 64;

pub(crate) fn parse(src: &str) -> Result<Vec<(String, Raw)>, DecodeError> {
    let tokens = Lexer::new(src).run()?;
    let mut parser = Parser {
        src,
        tokens: &tokens,
        pos: 0,
        depth: 0,
        unsupported: None,
    };
    let body = parser.items(None)?;
    parser.unsupported.map_or(Ok(body), Err)
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
        // Open brackets (char, offset): unbalanced ones are reported here, so the parser
        // never meets the end of the text inside brackets.
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
            match (c, braces) {
                ('\n', 0) => return self.err(at, "literal not terminated"),
                ('"', 0) => break,
                ('$', 0) if self.peek(0) == Some('{') => {
                    self.bump();
                    braces = 1;
                    out.extend_from_slice(b"${");
                    continue;
                }
                ('{', 1..) => braces += 1,
                ('}', 1..) => braces -= 1,
                _ => {}
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
        let at = self.offset();
        String::from_utf8(out).or_else(|_| self.err(at, "string escapes produce invalid UTF-8"))
    }

    /// One escape sequence after its backslash (already consumed; `at` is its offset).
    fn escape(&mut self, at: usize) -> LexResult<Vec<u8>> {
        let Some(c) = self.bump() else {
            return self.err(at, "literal not terminated");
        };
        let byte = match c {
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => b'\n',
            'r' => b'\r',
            't' => b'\t',
            'v' => 0x0b,
            '\\' => b'\\',
            '"' => b'"',
            '0'..='7' => {
                let v = c.to_digit(8).unwrap_or(0) * 64 + self.digits(at, 2, 8)?;
                u8::try_from(v).or_else(|_| self.err(at, "illegal char escape"))?
            }
            // Two hex digits always fit a byte.
            'x' => u8::try_from(self.digits(at, 2, 16)?).unwrap_or(0),
            'u' | 'U' => {
                let v = self.digits(at, if c == 'u' { 4 } else { 8 }, 16)?;
                return match char::from_u32(v) {
                    Some(ch) => Ok(ch.to_string().into_bytes()),
                    None => self.err(at, "illegal char escape"),
                };
            }
            _ => return self.err(at, "illegal char escape"),
        };
        Ok(vec![byte])
    }

    /// `n` digits in `radix` at the cursor, as a number.
    fn digits(&mut self, at: usize, n: usize, radix: u32) -> LexResult<u32> {
        let mut v: u32 = 0;
        for _ in 0..n {
            let Some(d) = self.peek(0).and_then(|d| d.to_digit(radix)) else {
                return self.err(at, "illegal char escape");
            };
            self.bump();
            v = v.wrapping_mul(radix).wrapping_add(d);
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
    for l in lines {
        out.push_str(l.strip_prefix(indent).filter(|_| strip).unwrap_or(l));
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
// Parser: tokens → Raw
// ---------------------------------------------------------------------------------------

struct Parser<'a> {
    src: &'a str,
    tokens: &'a [Token],
    pos: usize,
    /// Open objects and lists; a block with labels opens one object per name.
    depth: usize,
    /// The first unsupported value, reported once the text has parsed.
    unsupported: Option<DecodeError>,
}

/// `path.key`, the name an unsupported value is reported under.
fn join(path: Option<&str>, key: &str) -> String {
    path.map_or_else(|| key.to_owned(), |p| format!("{p}.{key}"))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Kind> {
        self.tokens.get(self.pos).map(|t| &t.kind)
    }

    fn eat(&mut self, kind: &Kind) -> bool {
        let hit = self.peek() == Some(kind);
        self.pos += usize::from(hit);
        hit
    }

    /// A syntax error at the current token; at the end of the text (only reachable at the
    /// top level: the lexer checked the brackets), at the start of the unfinished item.
    fn expected<T>(&self, what: &str, item_start: usize) -> Result<T, DecodeError> {
        Err(match self.tokens.get(self.pos) {
            Some(t) => DecodeError::at(self.src, t.start, format!("expected {what}")),
            None => DecodeError::at(
                self.src,
                item_start,
                format!("expected {what} before the end"),
            ),
        })
    }

    fn enter(&mut self, levels: usize, at: usize) -> Result<(), DecodeError> {
        self.depth += levels;
        if self.depth > MAX_NESTING {
            return Err(DecodeError::at(self.src, at, "nesting too deep"));
        }
        Ok(())
    }

    /// Items up to the end (top level, `path` None) or up to and including `}` (an object
    /// or block body, where a comma may follow each item).
    fn items(&mut self, path: Option<&str>) -> Result<Vec<(String, Raw)>, DecodeError> {
        let mut entries = Vec::new();
        loop {
            match self.peek() {
                None if path.is_none() => return Ok(entries),
                Some(Kind::RBrace) if path.is_some() => {
                    self.pos += 1;
                    return Ok(entries);
                }
                _ => {}
            }
            entries.push(self.item(path)?);
            if path.is_some() {
                self.eat(&Kind::Comma);
            }
        }
    }

    /// `key = value`, or a block: names (key and labels) then `{ … }`.
    fn item(&mut self, path: Option<&str>) -> Result<(String, Raw), DecodeError> {
        let start = self
            .tokens
            .get(self.pos)
            .map_or(self.src.len(), |t| t.start);
        let mut names = Vec::new();
        while let Some(t) = self.tokens.get(self.pos) {
            names.push(match &t.kind {
                Kind::Str(s) => s.clone(),
                Kind::Ident => self.src.get(t.start..t.end).unwrap_or("").to_owned(),
                _ => break,
            });
            self.pos += 1;
        }
        let Some(key) = names.first().cloned() else {
            return self.expected("a key", start);
        };
        if names.len() == 1 && self.eat(&Kind::Eq) {
            let value = self.value(&join(path, &key), start)?;
            return Ok((key, value));
        }
        if !self.eat(&Kind::LBrace) {
            let what = if names.len() == 1 {
                "'=' or '{'"
            } else {
                "'{'"
            };
            return self.expected(what, start);
        }
        self.enter(names.len(), start)?;
        let inner = names
            .iter()
            .fold(path.map(str::to_owned), |p, n| Some(join(p.as_deref(), n)));
        let mut value = Raw::Object(self.items(inner.as_deref())?);
        self.depth -= names.len();
        for label in names.into_iter().skip(1).rev() {
            value = Raw::Object(vec![(label, value)]);
        }
        Ok((key, value))
    }

    fn value(&mut self, path: &str, item_start: usize) -> Result<Raw, DecodeError> {
        let Some(t) = self.tokens.get(self.pos) else {
            return self.expected("a value", item_start);
        };
        let text = self.src.get(t.start..t.end).unwrap_or("");
        let raw = match &t.kind {
            Kind::Str(s) | Kind::Heredoc(s) => Raw::Str(s.clone()),
            Kind::Number => Raw::Num(text.to_owned()),
            Kind::Ident => match text {
                "true" => Raw::Bool(true),
                "false" => Raw::Bool(false),
                "null" => Raw::Null,
                _ => {
                    self.unsupported.get_or_insert_with(|| DecodeError(format!(
                        "{path}: unsupported value; expected a string, number, boolean, list or object"
                    )));
                    Raw::Null
                }
            },
            Kind::LBrace | Kind::LBrack => {
                self.pos += 1;
                self.enter(1, t.start)?;
                let raw = if t.kind == Kind::LBrace {
                    Raw::Object(self.items(Some(path))?)
                } else {
                    self.list(path)?
                };
                self.depth -= 1;
                return Ok(raw);
            }
            _ => return self.expected("a value", item_start),
        };
        self.pos += 1;
        Ok(raw)
    }

    /// List elements after `[`, comma-separated, a trailing comma allowed.
    fn list(&mut self, path: &str) -> Result<Raw, DecodeError> {
        let mut items = Vec::new();
        while !self.eat(&Kind::RBrack) {
            items.push(self.value(path, 0)?);
            if !self.eat(&Kind::Comma) && self.peek() != Some(&Kind::RBrack) {
                return self.expected("',' or ']'", 0);
            }
        }
        Ok(Raw::List(items))
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
        // A value missing at the very end is reported at the attribute's start.
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
