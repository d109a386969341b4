//! Executes a parsed template: walks the nodes with the cursor (`.`) and the variable stack,
//! evaluates pipelines and prints values the way Go's `text/template` does.
//!
//! Must not: know function semantics (they live in `funcs`).

use std::sync::Arc;

use super::{
    TemplateContext, TemplateError, Val,
    funcs::{self, Env},
    gofmt,
    parse::{BranchKind, Command, Node, Number, Pipeline, Term},
};

enum Flow {
    Normal,
    Break,
    Continue,
}

struct State<'a> {
    vars: Vec<(String, Val)>,
    env: Env<'a>,
    out: String,
}

fn err(message: impl Into<String>) -> TemplateError {
    TemplateError::Exec(message.into())
}

/// Runs `nodes` with `dot` as the cursor and `vars` predeclared.
pub fn execute(
    nodes: &[Node],
    dot: Val,
    vars: Vec<(String, Val)>,
    ctx: &dyn TemplateContext,
    external_url: &str,
) -> Result<String, TemplateError> {
    let mut state = State {
        vars,
        env: Env { ctx, external_url },
        out: String::new(),
    };
    state.walk(&dot, nodes)?;
    Ok(state.out)
}

impl State<'_> {
    fn walk(&mut self, dot: &Val, nodes: &[Node]) -> Result<Flow, TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipeline(dot, pipe, true)?;
                    if pipe.vars.is_empty() {
                        self.out.push_str(&gofmt::print_value(&v));
                    }
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
                Node::Branch {
                    kind,
                    pipe,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let flow = self.branch(dot, *kind, pipe, then, otherwise);
                    self.vars.truncate(mark);
                    match flow? {
                        Flow::Normal => {}
                        other => return Ok(other),
                    }
                }
            }
        }
        Ok(Flow::Normal)
    }

    fn branch(
        &mut self,
        dot: &Val,
        kind: BranchKind,
        pipe: &Pipeline,
        then: &[Node],
        otherwise: &[Node],
    ) -> Result<Flow, TemplateError> {
        match kind {
            BranchKind::If => {
                let v = self.pipeline(dot, pipe, true)?;
                if v.truthy() {
                    self.walk(dot, then)
                } else {
                    self.walk(dot, otherwise)
                }
            }
            BranchKind::With => {
                let v = self.pipeline(dot, pipe, true)?;
                if v.truthy() {
                    self.walk(&v, then)
                } else {
                    self.walk(dot, otherwise)
                }
            }
            BranchKind::Range => {
                let v = self.pipeline(dot, pipe, false)?;
                let items: Vec<(Val, Val)> = match &v {
                    Val::Samples(s) => s
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (Val::Int(i as i64), Val::Sample(Arc::new(s.clone()))))
                        .collect(),
                    Val::Map(m) => m
                        .iter()
                        .map(|(k, v)| (Val::Str(k.as_str().into()), Val::Str(v.as_str().into())))
                        .collect(),
                    Val::Args(a) => {
                        let mut keyed: Vec<(String, Val)> = a
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (format!("arg{i}"), v.clone()))
                            .collect();
                        keyed.sort_by(|x, y| x.0.cmp(&y.0));
                        keyed
                            .into_iter()
                            .map(|(k, v)| (Val::Str(k.into()), v))
                            .collect()
                    }
                    Val::Int(n) => (0..*n).map(|i| (Val::Int(i), Val::Int(i))).collect(),
                    Val::Nil => Vec::new(),
                    other => {
                        return Err(err(format!(
                            "range can't iterate over {}",
                            gofmt::print_value(other)
                        )));
                    }
                };
                if items.is_empty() {
                    return self.walk(dot, otherwise);
                }
                let mark = self.vars.len();
                for (key, value) in items {
                    self.vars.truncate(mark);
                    match pipe.vars.as_slice() {
                        [] => {}
                        [v] => self.vars.push((v.clone(), value.clone())),
                        [k, v, ..] => {
                            self.vars.push((k.clone(), key));
                            self.vars.push((v.clone(), value.clone()));
                        }
                    }
                    match self.walk(&value, then)? {
                        Flow::Break => break,
                        Flow::Continue | Flow::Normal => {}
                    }
                }
                Ok(Flow::Normal)
            }
        }
    }

    fn lookup(&self, name: &str) -> Result<Val, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| err(format!("undefined variable: {name}")))
    }

    /// Evaluates a pipeline; with `declare`, binds its variables.
    fn pipeline(
        &mut self,
        dot: &Val,
        pipe: &Pipeline,
        declare: bool,
    ) -> Result<Val, TemplateError> {
        let mut last: Option<Val> = None;
        for cmd in &pipe.cmds {
            last = Some(self.command(dot, cmd, last)?);
        }
        let value = last.unwrap_or(Val::Nil);
        if declare {
            for name in &pipe.vars {
                if pipe.assign {
                    if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                        slot.1 = value.clone();
                    }
                } else {
                    self.vars.push((name.clone(), value.clone()));
                }
            }
        }
        Ok(value)
    }

    fn command(
        &mut self,
        dot: &Val,
        cmd: &Command,
        piped: Option<Val>,
    ) -> Result<Val, TemplateError> {
        let first = &cmd.args[0];
        if let Term::Func(name) = first {
            let rest = &cmd.args[1..];
            // `and`/`or` evaluate lazily, as Go 1.18+ does.
            if name == "and" || name == "or" {
                let total = rest.len() + usize::from(piped.is_some());
                if total == 0 {
                    return Err(err(format!(
                        "wrong number of args for {name}: want at least 1 got 0"
                    )));
                }
                let want = name == "or";
                let mut value = Val::Nil;
                for term in rest {
                    value = self.arg(dot, term)?;
                    if value.truthy() == want {
                        return Ok(value);
                    }
                }
                if let Some(p) = piped {
                    value = p;
                }
                return Ok(value);
            }
            let mut args = Vec::with_capacity(rest.len() + 1);
            for term in rest {
                args.push(self.arg(dot, term)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return funcs::call(name, args, &self.env)
                .map_err(|e| err(format!("error calling {name}: {e}")));
        }
        if cmd.args.len() > 1 || piped.is_some() {
            return Err(err(format!(
                "can't give argument to non-function {}",
                describe(first)
            )));
        }
        self.arg(dot, first)
    }

    fn arg(&mut self, dot: &Val, term: &Term) -> Result<Val, TemplateError> {
        Ok(match term {
            Term::Dot => dot.clone(),
            Term::Field(chain) => fields(dot.clone(), chain)?,
            Term::Var(name, chain) => fields(self.lookup(name)?, chain)?,
            Term::Func(name) => funcs::call(name, Vec::new(), &self.env)
                .map_err(|e| err(format!("error calling {name}: {e}")))?,
            Term::Str(s) => Val::Str(s.as_str().into()),
            Term::Num(Number::Int(i)) => Val::Int(*i),
            Term::Num(Number::Float(f)) => Val::Float(*f),
            Term::Bool(b) => Val::Bool(*b),
            Term::Nil => Val::Nil,
            Term::Pipe(pipe, chain) => {
                let mark = self.vars.len();
                let v = self.pipeline(dot, pipe, true);
                self.vars.truncate(mark);
                fields(v?, chain)?
            }
        })
    }
}

fn describe(term: &Term) -> String {
    match term {
        Term::Dot => ".".to_owned(),
        Term::Field(c) => format!(".{}", c.join(".")),
        Term::Var(n, c) if c.is_empty() => n.clone(),
        Term::Var(n, c) => format!("{n}.{}", c.join(".")),
        Term::Str(s) => format!("{s:?}"),
        Term::Num(Number::Int(i)) => i.to_string(),
        Term::Num(Number::Float(f)) => f.to_string(),
        Term::Bool(b) => b.to_string(),
        Term::Nil => "nil".to_owned(),
        Term::Func(f) => f.clone(),
        Term::Pipe(..) => "(pipeline)".to_owned(),
    }
}

fn fields(mut v: Val, chain: &[String]) -> Result<Val, TemplateError> {
    for name in chain {
        v = field(&v, name)?;
    }
    Ok(v)
}

fn field(v: &Val, name: &str) -> Result<Val, TemplateError> {
    Ok(match (v, name) {
        (Val::Root(d), "Labels") => Val::Map(Arc::new(d.labels.clone())),
        (Val::Root(d), "ExternalLabels") => Val::Map(Arc::new(d.external_labels.clone())),
        (Val::Root(d), "ExternalURL") => Val::Str(d.external_url.as_str().into()),
        (Val::Root(d), "Value") => Val::Float(d.value),
        (Val::Sample(s), "Labels") => Val::Map(Arc::new(s.labels.clone())),
        (Val::Sample(s), "Value") => Val::Float(s.value),
        // missingkey=zero: an absent label is the empty string.
        (Val::Map(m), key) => Val::Str(m.get(key).map_or("", String::as_str).into()),
        (Val::Args(a), key) => key
            .strip_prefix("arg")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| a.get(i).cloned())
            .unwrap_or(Val::Nil),
        (Val::Nil, _) => return Err(err(format!("nil pointer evaluating interface {{}}.{name}"))),
        (other, _) => {
            return Err(err(format!(
                "can't evaluate field {name} in type {}",
                other.type_name()
            )));
        }
    })
}
