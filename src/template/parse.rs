//! Parser for Go `text/template` actions, following Go's own parser.
//! Functions are resolved here, so unknown and non-deterministic functions, wrong argument
//! counts, mistyped literal arguments and undefined variables are all parse errors.

use super::error::TemplateError;
use super::lex::{lex, unquote_body, Kw, Tok, Token};
use super::literal::{parse_number, Lit, NumLit};
use super::sprig::{self, Lookup, Spec, P};
use super::value::DATA_FIELDS;

/// Deepest nesting of parentheses and control structures (keeps recursion bounded).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    /// `if`, or `with` (which also sets dot to the pipeline's value).
    If {
        with: bool,
        pipe: Pipe,
        then: Vec<Node>,
        otherwise: Option<Vec<Node>>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Option<Vec<Node>>,
    },
    Break,
    Continue,
}

#[derive(Clone, Debug)]
pub(super) struct Pipe {
    pub(super) pos: usize,
    pub(super) decl: Vec<String>,
    pub(super) is_assign: bool,
    pub(super) cmds: Vec<Cmd>,
}

#[derive(Clone, Debug)]
pub(super) struct Cmd {
    pub(super) pos: usize,
    pub(super) args: Vec<Operand>,
}

#[derive(Clone, Debug)]
pub(super) struct Operand {
    pub(super) pos: usize,
    pub(super) term: Term,
    /// Field chain applied to the term (`.A.B`, `$x.A`, `(pipe).A`).
    pub(super) fields: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) enum Term {
    Dot,
    Nil,
    Lit(Lit),
    Var(String),
    Func(&'static Spec),
    Pipe(Box<Pipe>),
}

enum Stop {
    Eof(usize),
    Else(usize, Option<Kw>),
    End(usize),
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    vars: Vec<String>,
    depth: usize,
    range_depth: usize,
    /// Whether `.` is the root data here (not inside `with` or `range`).
    dot_is_root: bool,
}

/// Parses a whole template.
pub(super) fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        i: 0,
        vars: vec!["$".to_string()],
        depth: 0,
        range_depth: 0,
        dot_is_root: true,
    };
    let (nodes, stop) = p.item_list()?;
    match stop {
        Stop::Eof(_) => Ok(nodes),
        Stop::Else(pos, _) => Err(p.err(pos, "unexpected {{else}}")),
        Stop::End(pos) => Err(p.err(pos, "unexpected {{end}}")),
    }
}

fn describe_tok(t: &Tok) -> String {
    match t {
        Tok::Text(_) => "text".into(),
        Tok::LeftDelim => "\"{{\"".into(),
        Tok::RightDelim => "\"}}\"".into(),
        Tok::Space => "space".into(),
        Tok::Pipe => "\"|\"".into(),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Declare => "\":=\"".into(),
        Tok::Assign => "\"=\"".into(),
        Tok::Char(c) => format!("{:?}", c.to_string()),
        Tok::Str(s) => super::value::go_quote(s, false),
        Tok::CharConst(s) | Tok::Number(s) | Tok::Ident(s) | Tok::Var(s) => format!("{s:?}"),
        Tok::Bool(b) => format!("\"{b}\""),
        Tok::Nil => "\"nil\"".into(),
        Tok::Dot => "\".\"".into(),
        Tok::Field(f) => format!("\".{f}\""),
        Tok::Kw(k) => format!("<{}>", k.name()),
        Tok::Eof => "end of template".into(),
    }
}

impl Parser<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, pos, msg)
    }

    fn next(&mut self) -> Token {
        let t = self.peek();
        self.i = (self.i + 1).min(self.toks.len());
        t
    }

    fn peek(&self) -> Token {
        let eof = || Token {
            tok: Tok::Eof,
            pos: self.src.len(),
        };
        self.toks.get(self.i).cloned().unwrap_or_else(eof)
    }

    fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    fn next_non_space(&mut self) -> Token {
        loop {
            let t = self.next();
            if t.tok != Tok::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Token {
        let t = self.next_non_space();
        self.backup();
        t
    }

    fn expect_right_delim(&mut self, context: &str) -> Result<(), TemplateError> {
        let t = self.next_non_space();
        if t.tok == Tok::RightDelim {
            Ok(())
        } else {
            Err(self.err(
                t.pos,
                format!("unexpected {} in {context}", describe_tok(&t.tok)),
            ))
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(pos, "template nests too deeply"));
        }
        Ok(())
    }

    /// Text and actions up to EOF, `{{else}}` or `{{end}}`.
    fn item_list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Eof => return Ok((nodes, Stop::Eof(t.pos))),
                Tok::Text(s) => nodes.push(Node::Text(s)),
                Tok::LeftDelim => {
                    let k = self.next_non_space();
                    match k.tok {
                        Tok::Kw(Kw::Else) => {
                            let chained = match self.peek_non_space().tok {
                                Tok::Kw(kw @ (Kw::If | Kw::With)) => {
                                    self.next_non_space();
                                    Some(kw)
                                }
                                _ => {
                                    self.expect_right_delim("else")?;
                                    None
                                }
                            };
                            return Ok((nodes, Stop::Else(k.pos, chained)));
                        }
                        Tok::Kw(Kw::End) => {
                            self.expect_right_delim("end")?;
                            return Ok((nodes, Stop::End(k.pos)));
                        }
                        _ => {
                            self.backup();
                            nodes.push(self.action()?);
                        }
                    }
                }
                other => {
                    return Err(self.err(t.pos, format!("unexpected {}", describe_tok(&other))))
                }
            }
        }
    }

    /// The inside of `{{ ... }}` that is neither `else` nor `end`.
    fn action(&mut self) -> Result<Node, TemplateError> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Kw(kw @ (Kw::If | Kw::With | Kw::Range)) => self.control(t.pos, kw),
            Tok::Kw(kw @ (Kw::Break | Kw::Continue)) => {
                let name = kw.name();
                if self.range_depth == 0 {
                    return Err(self.err(t.pos, format!("{{{{{name}}}}} outside {{{{range}}}}")));
                }
                self.expect_right_delim(name)?;
                Ok(if kw == Kw::Break {
                    Node::Break
                } else {
                    Node::Continue
                })
            }
            Tok::Kw(Kw::Define | Kw::Template | Kw::Block) => Err(self.err(
                t.pos,
                "{{define}}, {{template}} and {{block}} are not supported in key name templates",
            )),
            _ => {
                self.backup();
                let pipe = self.pipeline("command", true)?;
                Ok(Node::Action(pipe))
            }
        }
    }

    /// `if`, `with` or `range`, after the keyword.
    fn control(&mut self, pos: usize, kw: Kw) -> Result<Node, TemplateError> {
        self.enter(pos)?;
        let context = kw.name();
        let mark = self.vars.len();
        let pipe = self.pipeline(context, true)?;
        let after_pipe = self.vars.len();
        let outer_root = self.dot_is_root;
        if kw != Kw::If {
            self.dot_is_root = false;
        }
        if kw == Kw::Range {
            self.range_depth += 1;
        }
        let body = self.item_list();
        if kw == Kw::Range {
            self.range_depth -= 1;
        }
        self.dot_is_root = outer_root;
        let (then, stop) = body?;
        self.vars.truncate(after_pipe);
        let src = self.src;
        let eof = |p| TemplateError::at(src, p, format!("unexpected EOF in {{{{{context}}}}}"));
        let otherwise = match stop {
            Stop::End(_) => None,
            Stop::Eof(p) => return Err(eof(p)),
            Stop::Else(p, Some(chained)) => {
                if kw != chained {
                    let chained = chained.name();
                    let msg = format!("unexpected {{{{else {chained}}}}} in {{{{{context}}}}}");
                    return Err(self.err(p, msg));
                }
                // `{{else if x}}` is `{{else}}{{if x}}...{{end}}{{end}}` sharing the final end.
                Some(vec![self.control(p, chained)?])
            }
            Stop::Else(_, None) => {
                let (list, stop) = self.item_list()?;
                match stop {
                    Stop::End(_) => Some(list),
                    Stop::Eof(p) => return Err(eof(p)),
                    Stop::Else(p, _) => {
                        return Err(self.err(
                            p,
                            format!("expected end; found {{{{else}}}} in {{{{{context}}}}}"),
                        ))
                    }
                }
            }
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(match kw {
            Kw::Range => Node::Range {
                pipe,
                body: then,
                otherwise,
            },
            _ => Node::If {
                with: kw == Kw::With,
                pipe,
                then,
                otherwise,
            },
        })
    }

    fn check_var(&self, pos: usize, name: &str) -> Result<(), TemplateError> {
        if self.vars.iter().any(|v| v == name) {
            Ok(())
        } else {
            Err(self.err(pos, format!("undefined variable {name:?}")))
        }
    }

    /// A pipeline ending at `}}` (`in_action`) or at `)`.
    fn pipeline(&mut self, context: &str, in_action: bool) -> Result<Pipe, TemplateError> {
        let pos = self.peek_non_space().pos;
        let mut decl = Vec::new();
        let mut is_assign = false;
        let start = self.i;
        if let Tok::Var(v) = self.peek_non_space().tok {
            self.next_non_space();
            let next = self.next_non_space();
            match next.tok {
                Tok::Declare | Tok::Assign => {
                    is_assign = next.tok == Tok::Assign;
                    decl.push((v, pos));
                }
                Tok::Char(',') if context == "range" => {
                    let v2 = self.next_non_space();
                    let Tok::Var(name2) = v2.tok else {
                        return Err(self.err(v2.pos, "range can only initialize variables"));
                    };
                    let op = self.next_non_space();
                    match op.tok {
                        Tok::Declare | Tok::Assign => is_assign = op.tok == Tok::Assign,
                        Tok::Char(',') => {
                            return Err(self.err(op.pos, "too many declarations in range"))
                        }
                        other => {
                            return Err(self.err(
                                op.pos,
                                format!("unexpected {} in range declaration", describe_tok(&other)),
                            ))
                        }
                    }
                    decl.push((v, pos));
                    decl.push((name2, v2.pos));
                }
                Tok::Char(',') => {
                    return Err(self.err(next.pos, format!("too many declarations in {context}")))
                }
                _ => self.i = start,
            }
        }
        if is_assign {
            for (name, p) in &decl {
                self.check_var(*p, name)?;
            }
        }
        let mut cmds = Vec::new();
        loop {
            let t = self.next_non_space();
            match t.tok {
                Tok::RightDelim if in_action => break,
                Tok::RParen if !in_action => break,
                Tok::Bool(_)
                | Tok::CharConst(_)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Number(_)
                | Tok::Nil
                | Tok::Str(_)
                | Tok::Var(_)
                | Tok::LParen => {
                    self.backup();
                    // Like Go, a trailing `|` before the closing delimiter is accepted.
                    cmds.push(self.command()?);
                }
                other => {
                    return Err(self.err(
                        t.pos,
                        format!("unexpected {} in {context}", describe_tok(&other)),
                    ))
                }
            }
        }
        if cmds.is_empty() {
            return Err(self.err(pos, format!("missing value for {context}")));
        }
        for (stage, cmd) in cmds.iter().enumerate() {
            self.check_command(cmd, stage)?;
        }
        if !is_assign {
            for (name, _) in &decl {
                self.vars.push(name.clone());
            }
        }
        Ok(Pipe {
            pos,
            decl: decl.into_iter().map(|(n, _)| n).collect(),
            is_assign,
            cmds,
        })
    }

    /// Static checks Go only does while executing: functions, arity, literal argument types.
    fn check_command(&self, cmd: &Cmd, stage: usize) -> Result<(), TemplateError> {
        let Some(first) = cmd.args.first() else {
            return Err(self.err(cmd.pos, "empty command"));
        };
        match &first.term {
            Term::Func(spec) => {
                let piped = usize::from(stage > 0);
                sprig::check_arity(spec, cmd.args.len() - 1 + piped)
                    .map_err(|m| self.err(first.pos, m))?;
                for (i, arg) in cmd.args.iter().enumerate().skip(1) {
                    self.check_arg(spec.param(i - 1), arg)?;
                }
            }
            other => {
                if stage > 0 {
                    let what = match other {
                        Term::Lit(_) | Term::Nil => "non executable command",
                        Term::Dot if first.fields.is_empty() => "non executable command",
                        _ => "non-function command",
                    };
                    return Err(
                        self.err(first.pos, format!("{what} in pipeline stage {}", stage + 1))
                    );
                }
                if matches!(other, Term::Nil) {
                    return Err(self.err(first.pos, "nil is not a command"));
                }
                if cmd.args.len() > 1 {
                    return Err(self.err(
                        first.pos,
                        format!(
                            "can't give argument to non-function {}",
                            self.describe(first)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_arg(&self, p: P, arg: &Operand) -> Result<(), TemplateError> {
        if !arg.fields.is_empty() {
            return Ok(());
        }
        match &arg.term {
            Term::Lit(lit) => {
                sprig::literal_arg(p, lit).map_err(|m| self.err(arg.pos, m))?;
            }
            Term::Nil => {
                sprig::nil_arg(p).map_err(|m| self.err(arg.pos, m))?;
            }
            Term::Func(spec) => {
                sprig::check_arity(spec, 0).map_err(|m| self.err(arg.pos, m))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn describe(&self, op: &Operand) -> String {
        let base = match &op.term {
            Term::Dot => String::new(),
            Term::Nil => "nil".into(),
            Term::Lit(l) => l.describe(),
            Term::Var(v) => v.clone(),
            Term::Func(s) => s.name.to_string(),
            Term::Pipe(_) => "(...)".into(),
        };
        let fields: String = op.fields.iter().map(|f| format!(".{f}")).collect();
        if base.is_empty() && fields.is_empty() {
            ".".into()
        } else {
            base + &fields
        }
    }

    fn command(&mut self) -> Result<Cmd, TemplateError> {
        let pos = self.peek_non_space().pos;
        let mut args = Vec::new();
        loop {
            while self.peek().tok == Tok::Space {
                self.next();
            }
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let t = self.next();
            match t.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RParen => {
                    self.backup();
                    break;
                }
                Tok::Pipe => break,
                other => {
                    return Err(self.err(
                        t.pos,
                        format!("unexpected {} in operand", describe_tok(&other)),
                    ))
                }
            }
        }
        if args.is_empty() {
            return Err(self.err(pos, "empty command"));
        }
        Ok(Cmd { pos, args })
    }

    fn operand(&mut self) -> Result<Option<Operand>, TemplateError> {
        let Some(mut op) = self.term()? else {
            return Ok(None);
        };
        let chain_allowed = match &op.term {
            Term::Var(_) | Term::Pipe(_) => true,
            Term::Dot => !op.fields.is_empty(),
            _ => false,
        };
        while let Tok::Field(f) = self.peek().tok {
            if !chain_allowed {
                let t = self.peek();
                return Err(self.err(
                    t.pos,
                    format!("unexpected .{f} after term {}", self.describe(&op)),
                ));
            }
            self.next();
            op.fields.push(f);
        }
        // The root data only has three string fields: catch typos at parse time.
        let on_root = match &op.term {
            Term::Dot => self.dot_is_root,
            Term::Var(v) => v == "$",
            _ => false,
        };
        if on_root {
            if let Some(first) = op.fields.first() {
                if !DATA_FIELDS.contains(&first.as_str()) {
                    return Err(self.err(
                        op.pos,
                        format!(
                            "can't evaluate field {first}: key name templates only have .TrustDomain, .KeyID and .ServerID"
                        ),
                    ));
                }
                if let Some(second) = op.fields.get(1) {
                    return Err(self.err(
                        op.pos,
                        format!("can't evaluate field {second} in type string"),
                    ));
                }
            }
        }
        Ok(Some(op))
    }

    fn term(&mut self) -> Result<Option<Operand>, TemplateError> {
        let t = self.next_non_space();
        let pos = t.pos;
        let op = |term| Operand {
            pos,
            term,
            fields: Vec::new(),
        };
        Ok(Some(match t.tok {
            Tok::Ident(name) => match sprig::lookup(&name) {
                Lookup::Func(spec) => op(Term::Func(spec)),
                Lookup::NotAllowed => {
                    return Err(self.err(
                        pos,
                        format!(
                            "function {name:?} is not allowed: key names must be deterministic"
                        ),
                    ))
                }
                Lookup::Unsupported => {
                    return Err(self.err(
                        pos,
                        format!("function {name:?} is not supported in key name templates"),
                    ))
                }
                Lookup::Unknown => {
                    return Err(self.err(pos, format!("function {name:?} not defined")))
                }
            },
            Tok::Dot => op(Term::Dot),
            Tok::Nil => op(Term::Nil),
            Tok::Var(name) => {
                self.check_var(pos, &name)?;
                op(Term::Var(name))
            }
            Tok::Field(f) => Operand {
                pos,
                term: Term::Dot,
                fields: vec![f],
            },
            Tok::Bool(b) => op(Term::Lit(Lit::Bool(b))),
            Tok::Str(s) => op(Term::Lit(Lit::Str(s))),
            Tok::Number(text) => {
                let n = parse_number(&text).map_err(|e| self.err(pos, e.to_string()))?;
                op(Term::Lit(Lit::Num(n)))
            }
            Tok::CharConst(text) => {
                let c = parse_char(&text).ok_or_else(|| {
                    self.err(pos, format!("malformed character constant: {text}"))
                })?;
                op(Term::Lit(Lit::Num(NumLit {
                    text,
                    int: Some(i64::from(c)),
                    float: Some(f64::from(c)),
                    floaty: false,
                })))
            }
            Tok::LParen => {
                self.enter(pos)?;
                let pipe = self.pipeline("parenthesized pipeline", false)?;
                self.depth -= 1;
                op(Term::Pipe(Box::new(pipe)))
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

/// Go's `strconv.UnquoteChar` on a character constant: the rune's value, `None` when the
/// constant is malformed.
fn parse_char(text: &str) -> Option<u32> {
    let body = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or("");
    // Byte escapes denote the rune with that value in a character constant.
    if let Some(hex) = body.strip_prefix("\\x") {
        return u32::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 2);
    }
    if body.len() == 4
        && body.starts_with('\\')
        && body[1..].bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return u32::from_str_radix(&body[1..], 8)
            .ok()
            .filter(|v| *v <= 255);
    }
    let s = unquote_body(body, '\'').ok()?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c as u32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_constants() {
        assert_eq!(parse_char("'a'"), Some(97));
        assert_eq!(parse_char("'\\n'"), Some(10));
        assert_eq!(parse_char("'\\xff'"), Some(255));
        assert_eq!(parse_char("'\\377'"), Some(255));
        assert_eq!(parse_char("'é'"), Some(0xE9));
        assert!(parse_char("'ab'").is_none());
        assert!(parse_char("''").is_none());
    }
}
