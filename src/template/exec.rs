//! Evaluator for parsed key-name templates, following Go's `text/template` executor
//! (truth, variables and their scopes, pipelines, `if`/`with`/`range`, `and`/`or` laziness).
//! Work is bounded: steps, produced data and output size have limits, so no template can
//! hang or exhaust memory. A step is a node or a call, and a call also pays a step per
//! `BYTES_PER_STEP` bytes of the values it reads and returns (more for functions whose work
//! grows faster than their input, `sprig::work`): a loop over large strings or lists runs out
//! of steps quickly instead of burning CPU. At most `MAX_STEPS` in all, which keeps any
//! template well under a second.

use super::error::TemplateError;
use super::parse::{Node, Operand, Pipe, Term};
use super::sprig::{self, Spec};
use super::value::{Value, MAX_DEPTH};

/// Most steps in one render.
const MAX_STEPS: u64 = 200_000;
/// Bytes a function reads or returns per step it is charged.
const BYTES_PER_STEP: u64 = 32;
/// Most bytes of values produced by function calls in one render.
const MAX_PRODUCED: usize = 32 << 20;
/// Longest rendered text.
const MAX_OUTPUT: usize = 1 << 20;

enum Flow {
    Normal,
    Break,
    Continue,
}

type R<T> = Result<T, (usize, String)>;

struct Exec {
    vars: Vec<(String, Value)>,
    out: String,
    steps: u64,
    produced: usize,
}

/// Renders `nodes` with `root` as both `.` and `$`.
pub(super) fn execute(src: &str, nodes: &[Node], root: Value) -> Result<String, TemplateError> {
    // Regular expressions compiled during this render are kept until it ends.
    let _regexes = sprig::RegexScope::enter();
    let mut ex = Exec {
        vars: vec![("$".to_string(), root.clone())],
        out: String::new(),
        steps: 0,
        produced: 0,
    };
    match ex.walk(&root, nodes) {
        Ok(_) => Ok(ex.out),
        Err((pos, msg)) => Err(TemplateError::at(src, pos, msg)),
    }
}

impl Exec {
    fn step(&mut self, pos: usize) -> R<()> {
        self.charge(pos, 1)
    }

    fn charge(&mut self, pos: usize, steps: u64) -> R<()> {
        self.steps = self.steps.saturating_add(steps);
        if self.steps > MAX_STEPS {
            return Err((
                pos,
                format!(
                    "template evaluation exceeded its step limit ({MAX_STEPS} steps; a \
                     function also pays a step per {BYTES_PER_STEP} bytes it reads or returns)"
                ),
            ));
        }
        Ok(())
    }

    /// Charges `bytes` of reading or writing.
    fn charge_bytes(&mut self, pos: usize, bytes: usize) -> R<()> {
        self.charge(pos, bytes as u64 / BYTES_PER_STEP)
    }

    /// The bytes the steps left can pay for: measuring a value stops past it.
    fn affordable(&self) -> usize {
        let left = MAX_STEPS.saturating_sub(self.steps);
        usize::try_from(
            left.saturating_mul(BYTES_PER_STEP)
                .saturating_add(BYTES_PER_STEP),
        )
        .unwrap_or(usize::MAX)
    }

    fn write(&mut self, pos: usize, s: &str) -> R<()> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err((pos, "rendered text exceeds the size limit".into()));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn walk(&mut self, dot: &Value, nodes: &[Node]) -> R<Flow> {
        for node in nodes {
            match node {
                Node::Text(t) => {
                    self.step(0)?;
                    self.write(0, t)?;
                }
                Node::Action(pipe) => {
                    self.step(pipe.pos)?;
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        // Printing walks the whole value.
                        let size = v.size_within(self.affordable()).unwrap_or(usize::MAX);
                        self.charge_bytes(pipe.pos, size)?;
                        // Go prints a missing value as "<no value>".
                        let s = match &v {
                            Value::Nil => "<no value>".to_string(),
                            v => v.to_go_string(),
                        };
                        self.write(pipe.pos, &s)?;
                    }
                }
                Node::If {
                    with,
                    pipe,
                    then,
                    otherwise,
                } => {
                    self.step(pipe.pos)?;
                    let mark = self.vars.len();
                    let v = self.pipeline(dot, pipe)?;
                    let flow = if v.truth() {
                        self.walk(if *with { &v } else { dot }, then)
                    } else if let Some(list) = otherwise {
                        self.walk(dot, list)
                    } else {
                        Ok(Flow::Normal)
                    };
                    self.vars.truncate(mark);
                    match flow? {
                        Flow::Normal => {}
                        f => return Ok(f),
                    }
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    self.step(pipe.pos)?;
                    let mark = self.vars.len();
                    let r = self.range(dot, pipe, body, otherwise.as_deref());
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn range(
        &mut self,
        dot: &Value,
        pipe: &Pipe,
        body: &[Node],
        otherwise: Option<&[Node]>,
    ) -> R<()> {
        let v = self.commands(dot, pipe)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::Int(i as i64), e.clone()))
                .collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, e)| (Value::string(k.as_str()), e.clone()))
                .collect(),
            Value::Int(n) => {
                if pipe.decl.len() > 1 {
                    return Err((
                        pipe.pos,
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                let n = usize::try_from(*n).unwrap_or(0);
                if n > sprig::MAX_LIST {
                    return Err((
                        pipe.pos,
                        format!("range over {n} exceeds the iteration limit"),
                    ));
                }
                (0..n)
                    .map(|i| (Value::Int(i as i64), Value::Int(i as i64)))
                    .collect()
            }
            Value::Nil => Vec::new(),
            other => {
                return Err((
                    pipe.pos,
                    format!("range can't iterate over {}", other.to_go_string()),
                ))
            }
        };
        // Declared variables hold the whole value first (visible in {{else}}), then each
        // iteration's index and element.
        let base = self.vars.len();
        self.declare(pipe, &v)?;
        if items.is_empty() {
            if let Some(list) = otherwise {
                self.walk(dot, list)?;
            }
            return Ok(());
        }
        for (index, elem) in items {
            self.step(pipe.pos)?;
            let values = match pipe.decl.len() {
                1 => vec![elem.clone()],
                2 => vec![index, elem.clone()],
                _ => Vec::new(),
            };
            for (i, (name, val)) in pipe.decl.iter().zip(values).enumerate() {
                if pipe.is_assign {
                    self.set_var(pipe.pos, name, val)?;
                } else if let Some(slot) = self.vars.get_mut(base + i) {
                    slot.1 = val;
                }
            }
            let mark = self.vars.len();
            let flow = self.walk(&elem, body);
            self.vars.truncate(mark);
            match flow? {
                Flow::Break => break,
                Flow::Continue | Flow::Normal => {}
            }
        }
        Ok(())
    }

    fn set_var(&mut self, pos: usize, name: &str, v: Value) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err((pos, format!("undefined variable: {name}"))),
        }
    }

    fn var(&self, pos: usize, name: &str) -> R<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| (pos, format!("undefined variable: {name}")))
    }

    /// The commands of a pipeline, each result piped into the next as its last argument.
    fn commands(&mut self, dot: &Value, pipe: &Pipe) -> R<Value> {
        let mut v: Option<Value> = None;
        for cmd in &pipe.cmds {
            let Some(first) = cmd.args.first() else {
                return Err((cmd.pos, "empty command".into()));
            };
            v = Some(match &first.term {
                Term::Func(spec) if first.fields.is_empty() => {
                    self.call(dot, spec, first.pos, &cmd.args[1..], v.take())?
                }
                _ => {
                    if v.is_some() || cmd.args.len() > 1 {
                        return Err((first.pos, "can't give argument to non-function".into()));
                    }
                    self.operand(dot, first)?
                }
            });
        }
        Ok(v.unwrap_or(Value::Nil))
    }

    fn pipeline(&mut self, dot: &Value, pipe: &Pipe) -> R<Value> {
        let v = self.commands(dot, pipe)?;
        self.declare(pipe, &v)?;
        Ok(v)
    }

    /// Declares or assigns the pipeline's variables to `v`.
    fn declare(&mut self, pipe: &Pipe, v: &Value) -> R<()> {
        for name in &pipe.decl {
            if pipe.is_assign {
                self.set_var(pipe.pos, name, v.clone())?;
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(())
    }

    fn call(
        &mut self,
        dot: &Value,
        spec: &'static Spec,
        pos: usize,
        args: &[Operand],
        piped: Option<Value>,
    ) -> R<Value> {
        self.step(pos)?;
        let n = args.len() + usize::from(piped.is_some());
        sprig::check_arity(spec, n).map_err(|m| (pos, m))?;
        let fail = |m: String| (pos, format!("error calling {}: {m}", spec.name));
        if spec.is_lazy() {
            // `and` stops at the first false argument, `or` at the first true one.
            let want = spec.name == "or";
            let mut last = Value::Nil;
            for a in args {
                last = self.arg(dot, sprig::P::A, a)?;
                if last.truth() == want {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let mut vals = Vec::with_capacity(n);
        for (i, a) in args.iter().enumerate() {
            let v = self.arg(dot, spec.param(i), a)?;
            vals.push(v);
        }
        if let Some(p) = piped {
            let v = sprig::convert(spec.param(args.len()), p).map_err(|m| (pos, m))?;
            vals.push(v);
        }
        // Paid before the call: its work grows with what it reads.
        let work = sprig::work(spec, &vals, self.affordable());
        self.charge_bytes(pos, work)?;
        let result = (spec.f)(&vals).map_err(fail)?;
        let size = result
            .size_within(self.affordable().min(MAX_PRODUCED + 1))
            .ok_or_else(|| {
                fail(format!(
                    "the result nests lists or maps more than {MAX_DEPTH} deep"
                ))
            })?;
        self.produced = self.produced.saturating_add(size);
        if self.produced > MAX_PRODUCED {
            return Err((pos, "template evaluation exceeded its memory limit".into()));
        }
        self.charge_bytes(pos, size)?;
        Ok(result)
    }

    /// One argument, converted to the parameter type like Go's `evalArg`.
    fn arg(&mut self, dot: &Value, p: sprig::P, a: &Operand) -> R<Value> {
        if a.fields.is_empty() {
            match &a.term {
                Term::Lit(lit) => return sprig::literal_arg(p, lit).map_err(|m| (a.pos, m)),
                Term::Nil => return sprig::nil_arg(p).map_err(|m| (a.pos, m)),
                _ => {}
            }
        }
        let v = self.operand(dot, a)?;
        sprig::convert(p, v).map_err(|m| (a.pos, m))
    }

    fn operand(&mut self, dot: &Value, a: &Operand) -> R<Value> {
        let mut v = match &a.term {
            Term::Dot => dot.clone(),
            Term::Nil => return Err((a.pos, "nil is not a command".into())),
            Term::Lit(lit) => sprig::ideal(lit).map_err(|m| (a.pos, m))?,
            Term::Var(name) => self.var(a.pos, name)?,
            Term::Func(spec) => self.call(dot, spec, a.pos, &[], None)?,
            Term::Pipe(p) => {
                // A parenthesized pipeline's declarations stay in scope, as in Go.
                self.pipeline(dot, p)?
            }
        };
        for f in &a.fields {
            v = field(&v, f).ok_or_else(|| {
                (
                    a.pos,
                    format!("can't evaluate field {f} in type {}", v.type_name()),
                )
            })?;
        }
        Ok(v)
    }
}

/// Field `name` of `v`; `None` when `v` has no such field.
fn field(v: &Value, name: &str) -> Option<Value> {
    match v {
        Value::Data(d) => d.field(name).map(Value::string),
        Value::Map(m) => Some(m.get(name).cloned().unwrap_or(Value::Nil)),
        // Go treats a missing value like a missing map key: the result is missing too.
        Value::Nil => Some(Value::Nil),
        _ => None,
    }
}
