//! Lexer for Go `text/template` syntax (`{{ }}` delimiters, trim markers, comments), a port
//! of the state machine of Go's `text/template` lexer.

use super::error::TemplateError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Text(String),
    LeftDelim,
    RightDelim,
    Space,
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    /// Any other printable ASCII punctuation inside an action (`,` in range declarations).
    Char(char),
    /// A string literal, already unquoted.
    Str(String),
    /// A character constant, raw text including the quotes.
    CharConst(String),
    Number(String),
    Bool(bool),
    Nil,
    Dot,
    /// `.Name`, without the dot.
    Field(String),
    /// `$` or `$name`, including the `$`.
    Var(String),
    Ident(String),
    Kw(Kw),
    Eof,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kw {
    If,
    Else,
    End,
    With,
    Range,
    Break,
    Continue,
    Define,
    Template,
    Block,
}

impl Kw {
    const ALL: [Kw; 10] = {
        use Kw::*;
        [
            If, Else, End, With, Range, Break, Continue, Define, Template, Block,
        ]
    };

    /// The keyword as written in a template.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kw::If => "if",
            Kw::Else => "else",
            Kw::End => "end",
            Kw::With => "with",
            Kw::Range => "range",
            Kw::Break => "break",
            Kw::Continue => "continue",
            Kw::Define => "define",
            Kw::Template => "template",
            Kw::Block => "block",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// `- ` right after `{{`.
fn has_left_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(char::from(b[1]))
}

/// A right delimiter with its trim marker: ` -}}`.
fn has_right_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && is_space(char::from(b[0])) && b[1] == b'-' && s[2..].starts_with(RIGHT)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Token>,
    paren_depth: usize,
}

/// Splits a template into tokens.
pub(super) fn lex(src: &str) -> Result<Vec<Token>, TemplateError> {
    let mut lx = Lexer {
        src,
        pos: 0,
        toks: Vec::new(),
        paren_depth: 0,
    };
    lx.run()?;
    Ok(lx.toks)
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn push(&mut self, tok: Tok, pos: usize) {
        self.toks.push(Token { tok, pos });
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, pos, msg)
    }

    /// (at `}}`, with a trim marker).
    fn at_right_delim(&self) -> (bool, bool) {
        let rest = self.rest();
        if has_right_trim(rest) {
            return (true, true);
        }
        (rest.starts_with(RIGHT), false)
    }

    fn skip_leading_space(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches(is_space);
        self.pos += rest.len() - trimmed.len();
    }

    fn run(&mut self) -> Result<(), TemplateError> {
        loop {
            let rest = self.rest();
            let Some(x) = rest.find(LEFT) else {
                if !rest.is_empty() {
                    self.push(Tok::Text(rest.to_string()), self.pos);
                }
                self.pos = self.src.len();
                self.push(Tok::Eof, self.pos);
                return Ok(());
            };
            let delim_pos = self.pos + x;
            let after_delim = delim_pos + LEFT.len();
            let trim = has_left_trim(self.src.get(after_delim..).unwrap_or(""));
            let mut text = &rest[..x];
            if trim {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                self.push(Tok::Text(text.to_string()), self.pos);
            }
            self.pos = after_delim;
            let marker = if trim { 2 } else { 0 };
            if self
                .src
                .get(self.pos + marker..)
                .is_some_and(|r| r.starts_with("/*"))
            {
                self.comment(delim_pos, marker)?;
                continue;
            }
            self.push(Tok::LeftDelim, delim_pos);
            self.pos += marker;
            self.paren_depth = 0;
            self.inside_action(delim_pos)?;
        }
    }

    fn comment(&mut self, start: usize, marker: usize) -> Result<(), TemplateError> {
        self.pos += marker + 2;
        let Some(x) = self.rest().find("*/") else {
            return Err(self.err(start, "unclosed comment"));
        };
        self.pos += x + 2;
        let (delim, trim) = self.at_right_delim();
        if !delim {
            return Err(self.err(start, "comment ends before closing delimiter"));
        }
        self.skip_right_delim(trim);
        Ok(())
    }

    /// Moves past a right delimiter with its trim marker (and the space that trims) and
    /// returns where the delimiter starts.
    fn skip_right_delim(&mut self, trim: bool) -> usize {
        if trim {
            self.pos += 2;
        }
        let at = self.pos;
        self.pos += RIGHT.len();
        if trim {
            self.skip_leading_space();
        }
        at
    }

    fn inside_action(&mut self, action_start: usize) -> Result<(), TemplateError> {
        loop {
            let (delim, trim) = self.at_right_delim();
            if delim {
                if self.paren_depth > 0 {
                    return Err(self.err(self.pos, "unclosed left paren"));
                }
                let at = self.skip_right_delim(trim);
                self.push(Tok::RightDelim, at);
                return Ok(());
            }
            let start = self.pos;
            let Some(c) = self.peek() else {
                return Err(self.err(action_start, "unclosed action"));
            };
            self.pos += c.len_utf8();
            match c {
                c if is_space(c) => {
                    // A space that starts a ` -}}` trim marker belongs to the delimiter.
                    while let Some(n) = self.peek() {
                        if !is_space(n) {
                            break;
                        }
                        if has_right_trim(self.rest()) {
                            break;
                        }
                        self.pos += n.len_utf8();
                    }
                    self.push(Tok::Space, start);
                }
                '=' => self.push(Tok::Assign, start),
                ':' => {
                    if self.peek() != Some('=') {
                        return Err(self.err(start, "expected :="));
                    }
                    self.pos += 1;
                    self.push(Tok::Declare, start);
                }
                '|' => self.push(Tok::Pipe, start),
                '"' => self.quote(start)?,
                '`' => self.raw_quote(start)?,
                '$' => {
                    let name = self.alnum_run();
                    self.check_terminator(start)?;
                    self.push(Tok::Var(format!("${name}")), start);
                }
                '\'' => self.char_const(start)?,
                '.' if !self.peek().is_some_and(|n| n.is_ascii_digit()) => {
                    let name = self.alnum_run();
                    self.check_terminator(start)?;
                    if name.is_empty() {
                        self.push(Tok::Dot, start);
                    } else {
                        self.push(Tok::Field(name), start);
                    }
                }
                '.' | '+' | '-' | '0'..='9' => {
                    self.pos = start;
                    self.number(start)?;
                }
                c if is_alnum(c) => {
                    self.pos = start;
                    let word = self.alnum_run();
                    self.check_terminator(start)?;
                    let tok = match word.as_str() {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        w => Kw::ALL
                            .into_iter()
                            .find(|k| k.name() == w)
                            .map_or_else(|| Tok::Ident(w.to_string()), Tok::Kw),
                    };
                    self.push(tok, start);
                }
                '(' => {
                    self.paren_depth += 1;
                    self.push(Tok::LParen, start);
                }
                ')' => {
                    if self.paren_depth == 0 {
                        return Err(self.err(start, "unexpected right paren"));
                    }
                    self.paren_depth -= 1;
                    self.push(Tok::RParen, start);
                }
                c if c.is_ascii() && !c.is_ascii_control() => self.push(Tok::Char(c), start),
                c => {
                    return Err(
                        self.err(start, format!("unrecognized character in action: {:?}", c))
                    )
                }
            }
        }
    }

    fn alnum_run(&mut self) -> String {
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|&(_, c)| !is_alnum(c))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += end;
        rest[..end].to_string()
    }

    /// Go requires a field, variable or identifier to be followed by a terminator.
    fn check_terminator(&self, start: usize) -> Result<(), TemplateError> {
        match self.peek() {
            None => Ok(()),
            Some(c) if is_space(c) || matches!(c, '.' | ',' | '|' | ':' | ')' | '(') => Ok(()),
            Some(_) if self.rest().starts_with(RIGHT) => Ok(()),
            Some(c) => Err(self.err(start, format!("bad character {c:?}"))),
        }
    }

    fn number(&mut self, start: usize) -> Result<(), TemplateError> {
        let bytes = self.rest().as_bytes();
        let mut i = 0;
        let accept = |i: &mut usize, set: &[u8]| -> bool {
            if bytes.get(*i).is_some_and(|b| set.contains(b)) {
                *i += 1;
                true
            } else {
                false
            }
        };
        let run = |i: &mut usize, set: &[u8]| {
            while bytes.get(*i).is_some_and(|b| set.contains(b)) {
                *i += 1;
            }
        };
        accept(&mut i, b"+-");
        let mut digits: &[u8] = b"0123456789_";
        if accept(&mut i, b"0") {
            if accept(&mut i, b"xX") {
                digits = b"0123456789abcdefABCDEF_";
            } else if accept(&mut i, b"oO") {
                digits = b"01234567_";
            } else if accept(&mut i, b"bB") {
                digits = b"01_";
            }
        }
        run(&mut i, digits);
        if accept(&mut i, b".") {
            run(&mut i, digits);
        }
        if digits.len() == 11 && accept(&mut i, b"eE") {
            accept(&mut i, b"+-");
            run(&mut i, b"0123456789_");
        }
        if digits.len() == 23 && accept(&mut i, b"pP") {
            accept(&mut i, b"+-");
            run(&mut i, b"0123456789_");
        }
        accept(&mut i, b"i");
        let text = self.rest().get(..i).unwrap_or("").to_string();
        self.pos += i;
        if self.peek().is_some_and(is_alnum) {
            return Err(self.err(
                start,
                format!("bad number syntax: {:?}", self.bad_word(start)),
            ));
        }
        self.push(Tok::Number(text), start);
        Ok(())
    }

    fn bad_word(&self, start: usize) -> &'a str {
        let s = self.src.get(start..).unwrap_or("");
        let end = s
            .char_indices()
            .skip(1)
            .find(|&(_, c)| !is_alnum(c) && c != '.')
            .map_or(s.len(), |(i, _)| i);
        &s[..end]
    }

    /// The length of a quoted string or character constant ending at `delim`, escapes
    /// skipped; `unterminated` is the error when a newline or the end comes first.
    fn quoted_len(
        &self,
        start: usize,
        delim: char,
        unterminated: &str,
    ) -> Result<usize, TemplateError> {
        let mut chars = self.rest().char_indices();
        loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, c)) if c != '\n' => {}
                    _ => return Err(self.err(start, unterminated)),
                },
                Some((i, c)) if c == delim => return Ok(i),
                Some((_, '\n')) | None => return Err(self.err(start, unterminated)),
                Some(_) => {}
            }
        }
    }

    fn quote(&mut self, start: usize) -> Result<(), TemplateError> {
        let end = self.quoted_len(start, '"', "unterminated quoted string")?;
        let body = &self.rest()[..end];
        self.pos += end + 1;
        let s = unquote_body(body, '"').map_err(|e| self.err(start, e.to_string()))?;
        self.push(Tok::Str(s), start);
        Ok(())
    }

    fn raw_quote(&mut self, start: usize) -> Result<(), TemplateError> {
        let rest = self.rest();
        let Some(end) = rest.find('`') else {
            return Err(self.err(start, "unterminated raw quoted string"));
        };
        // strconv.Unquote drops carriage returns from raw strings.
        let s: String = rest[..end].chars().filter(|&c| c != '\r').collect();
        self.pos += end + 1;
        self.push(Tok::Str(s), start);
        Ok(())
    }

    fn char_const(&mut self, start: usize) -> Result<(), TemplateError> {
        let end = self.quoted_len(start, '\'', "unterminated character constant")?;
        let text = format!("'{}'", &self.rest()[..end]);
        self.pos += end + 1;
        self.push(Tok::CharConst(text), start);
        Ok(())
    }
}

/// Why the escapes of a quoted string cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum UnquoteError {
    /// A backslash ends the string.
    #[error("invalid syntax in quoted string")]
    Syntax,
    #[error("invalid hex escape in quoted string")]
    Hex,
    #[error("invalid octal escape in quoted string")]
    Octal,
    /// `\u` or `\U` (the letter) naming a value that is not a Unicode scalar value.
    #[error("invalid Unicode code point \\{0}{1:x} in string")]
    CodePoint(char, u32),
    #[error("unknown escape sequence \\{0} in quoted string")]
    UnknownEscape(char),
    #[error("quoted string is not valid UTF-8 (check \\x and octal escapes)")]
    NotUtf8,
}

/// Decodes the escapes of a Go interpreted string or character literal body (`strconv.Unquote`).
/// Byte escapes (`\xff`, `\377`) must form valid UTF-8 because names are text.
pub(super) fn unquote_body(body: &str, quote: char) -> Result<String, UnquoteError> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(UnquoteError::Syntax);
        };
        match e {
            'a' => out.push(0x7),
            'b' => out.push(0x8),
            'f' => out.push(0xc),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0xb),
            '\\' => out.push(b'\\'),
            '"' | '\'' if e == quote => out.push(e as u8),
            'x' => {
                let v = hex_digits(&mut chars, 2)?;
                out.push(v as u8);
            }
            'u' | 'U' => {
                let v = hex_digits(&mut chars, if e == 'u' { 4 } else { 8 })?;
                let c = char::from_u32(v).ok_or(UnquoteError::CodePoint(e, v))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    let d = chars
                        .next()
                        .and_then(|c| c.to_digit(8))
                        .ok_or(UnquoteError::Octal)?;
                    v = v * 8 + d;
                }
                if v > 255 {
                    return Err(UnquoteError::Octal);
                }
                out.push(v as u8);
            }
            _ => return Err(UnquoteError::UnknownEscape(e)),
        }
    }
    String::from_utf8(out).map_err(|_| UnquoteError::NotUtf8)
}

fn hex_digits(chars: &mut std::str::Chars<'_>, n: usize) -> Result<u32, UnquoteError> {
    let mut v: u32 = 0;
    for _ in 0..n {
        let d = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or(UnquoteError::Hex)?;
        v = v * 16 + d;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn trim_markers_eat_adjacent_whitespace() {
        assert_eq!(
            kinds("a  {{- .X -}}\n b"),
            vec![
                Tok::Text("a".into()),
                Tok::LeftDelim,
                Tok::Field("X".into()),
                Tok::RightDelim,
                Tok::Text("b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn comments_vanish() {
        assert_eq!(
            kinds("a {{- /* note */ -}} b{{/* x */}}"),
            vec![Tok::Text("a".into()), Tok::Text("b".into()), Tok::Eof]
        );
    }

    #[test]
    fn strings_numbers_and_vars() {
        assert_eq!(
            kinds(r#"{{$x := "a\tb" `r\n` -1.5 0x1F 'c'}}"#),
            vec![
                Tok::LeftDelim,
                Tok::Var("$x".into()),
                Tok::Space,
                Tok::Declare,
                Tok::Space,
                Tok::Str("a\tb".into()),
                Tok::Space,
                Tok::Str("r\\n".into()),
                Tok::Space,
                Tok::Number("-1.5".into()),
                Tok::Space,
                Tok::Number("0x1F".into()),
                Tok::Space,
                Tok::CharConst("'c'".into()),
                Tok::RightDelim,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn lexical_errors() {
        for (src, want) in [
            ("{{ .KeyID", "unclosed action"),
            ("{{ \"abc }}", "unterminated quoted string"),
            ("{{ `abc }}", "unterminated raw quoted string"),
            ("{{ 'a }}", "unterminated character constant"),
            ("{{/* x }}", "unclosed comment"),
            ("{{/* x */ .X }}", "comment ends before closing delimiter"),
            ("{{ (.X }}", "unclosed left paren"),
            ("{{ .X) }}", "unexpected right paren"),
            ("{{ 12ab }}", "bad number syntax"),
            ("{{ a : b }}", "expected :="),
            ("{{ \"\\q\" }}", "unknown escape"),
            ("{{ \"\\xff\" }}", "not valid UTF-8"),
            ("{{ é€ }}", "bad character"),
            ("{{ \u{1} }}", "unrecognized character"),
        ] {
            let err = lex(src).unwrap_err().to_string();
            assert!(err.contains(want), "{src:?}: {err}");
        }
    }
}
