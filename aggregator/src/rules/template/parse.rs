//! Lexer and parser for the subset of Go's `text/template` that Prometheus rule templates
//! use. Produces the [`Node`] tree the executor walks.
//!
//! Supported: text, `{{ pipeline }}`, trim markers `{{-`/`-}}`, comments `{{/* */}}`,
//! `if`/`else if`/`else`/`end`, `range` (with `$i, $v :=`, `else`, `break`, `continue`),
//! `with`/`else`, variable declaration and assignment, `.`, field chains (`.Labels.job`,
//! `$labels.job`, `(pipeline).field`), pipelines with `|`, parenthesised pipelines, string
//! (interpreted and raw), number, character, `true`/`false`/`nil` literals.
//! Not supported (a parse error names them): `define`, `template`, `block`, `else with`.
//! Functions and variables are checked at parse time, as Go does.

use std::collections::HashSet;

use super::TemplateError;

/// A literal number, kept as Go keeps untyped constants: integer or float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer constant (`1`, `-3`, `0x1f`, `'a'`).
    Int(i64),
    /// A floating constant (`1.5`, `1e3`).
    Float(f64),
}

/// One operand of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// `.` (the cursor).
    Dot,
    /// `.a.b`: fields of the cursor.
    Field(Vec<String>),
    /// `$x.a.b` (`$` alone is the root data).
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    /// A string literal.
    Str(String),
    /// A number literal.
    Num(Number),
    /// `true` / `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// `(pipeline).a.b`.
    Pipe(Box<Pipeline>, Vec<String>),
}

/// Operands separated by spaces: a function call when the first is a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The operands.
    pub args: Vec<Term>,
}

/// `[$a[, $b] :=|=] cmd | cmd ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Declared or assigned variables.
    pub vars: Vec<String>,
    /// `=` rather than `:=`.
    pub assign: bool,
    /// The commands, each one's result passed as the last argument of the next.
    pub cmds: Vec<Command>,
}

/// A parsed template node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Literal text.
    Text(String),
    /// `{{ pipeline }}`: printed unless it declares a variable.
    Action(Pipeline),
    /// `if`, `with` (`with` moves the cursor) and `range`.
    Branch {
        /// Which.
        kind: BranchKind,
        /// The condition or ranged value.
        pipe: Pipeline,
        /// Taken when true or non-empty.
        then: Vec<Node>,
        /// Taken otherwise.
        otherwise: Vec<Node>,
    },
    /// `{{break}}`.
    Break,
    /// `{{continue}}`.
    Continue,
}

/// Kinds of branch nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchKind {
    /// `if`.
    If,
    /// `with`.
    With,
    /// `range`.
    Range,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Open,
    Close,
    Ident(String),
    Field(Vec<String>),
    /// A field chain written right after `)`.
    Chain(Vec<String>),
    Dot,
    Var(String, Vec<String>),
    Str(String),
    Num(Number),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<(Tok, usize)>,
}

fn line_of(src: &str, pos: usize) -> usize {
    src[..pos.min(src.len())].matches('\n').count() + 1
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Parse {
            line: line_of(self.src, at),
            message: message.into(),
        }
    }

    fn run(mut self) -> Result<Vec<(Tok, usize)>, TemplateError> {
        let mut trim_next = false;
        while self.pos < self.src.len() {
            let rest = &self.src[self.pos..];
            let open = rest.find("{{").unwrap_or(rest.len());
            let mut text = rest[..open].to_owned();
            if trim_next {
                text = text.trim_start().to_owned();
            }
            let start = self.pos + open;
            if open == rest.len() {
                if !text.is_empty() {
                    self.toks.push((Tok::Text(text), self.pos));
                }
                self.pos = self.src.len();
                break;
            }
            let after = &self.src[start + 2..];
            let trim_before = after.starts_with("- ")
                || after.starts_with("-\t")
                || after.starts_with("-\n")
                || after.starts_with("-\r");
            if trim_before {
                text = text.trim_end().to_owned();
            }
            if !text.is_empty() {
                self.toks.push((Tok::Text(text), self.pos));
            }
            self.pos = start + 2 + usize::from(trim_before);
            trim_next = self.action(start)?;
        }
        Ok(self.toks)
    }

    /// Lexes one action after its `{{`; returns whether it ended with `-}}`.
    fn action(&mut self, start: usize) -> Result<bool, TemplateError> {
        // Comments.
        let rest = self.src[self.pos..].trim_start();
        if rest.starts_with("/*") {
            let comment_start = self.src.len() - rest.len();
            let end = rest
                .find("*/")
                .ok_or_else(|| self.err(start, "unclosed comment"))?;
            self.pos = comment_start + end + 2;
            let tail = &self.src[self.pos..];
            let trimmed = tail.trim_start();
            let ws = tail.len() - trimmed.len();
            if trimmed.starts_with("-}}") && ws > 0 {
                self.pos += ws + 3;
                return Ok(true);
            }
            if tail.starts_with("}}") {
                self.pos += 2;
                return Ok(false);
            }
            return Err(self.err(start, "comment ends before closing delimiter"));
        }
        self.toks.push((Tok::Open, start));
        loop {
            let bytes = self.src.as_bytes();
            let Some(&c) = bytes.get(self.pos) else {
                return Err(self.err(start, "unclosed action"));
            };
            let at = self.pos;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    let tail = &self.src[self.pos..];
                    let trimmed = tail.trim_start();
                    let ws = tail.len() - trimmed.len();
                    if trimmed.starts_with("-}}") {
                        self.pos += ws + 3;
                        self.toks.push((Tok::Close, at));
                        return Ok(true);
                    }
                    self.pos += ws;
                }
                b'}' if self.src[self.pos..].starts_with("}}") => {
                    self.pos += 2;
                    self.toks.push((Tok::Close, at));
                    return Ok(false);
                }
                b'|' => {
                    self.pos += 1;
                    self.toks.push((Tok::Pipe, at));
                }
                b'(' => {
                    self.pos += 1;
                    self.toks.push((Tok::LParen, at));
                }
                b')' => {
                    self.pos += 1;
                    self.toks.push((Tok::RParen, at));
                    if self.src[self.pos..].starts_with('.') {
                        let chain = self.fields()?;
                        self.toks.push((Tok::Chain(chain), at));
                    }
                }
                b',' => {
                    self.pos += 1;
                    self.toks.push((Tok::Comma, at));
                }
                b':' if self.src[self.pos..].starts_with(":=") => {
                    self.pos += 2;
                    self.toks.push((Tok::Declare, at));
                }
                b'=' => {
                    self.pos += 1;
                    self.toks.push((Tok::Assign, at));
                }
                b'"' => {
                    let s = self.quoted()?;
                    self.toks.push((Tok::Str(s), at));
                }
                b'`' => {
                    let end = self.src[self.pos + 1..]
                        .find('`')
                        .ok_or_else(|| self.err(at, "unterminated raw quoted string"))?;
                    let s = self.src[self.pos + 1..self.pos + 1 + end].to_owned();
                    self.pos += end + 2;
                    self.toks.push((Tok::Str(s), at));
                }
                b'\'' => {
                    let rest = &self.src[self.pos + 1..];
                    let mut chars = rest.chars();
                    let ch = chars
                        .next()
                        .ok_or_else(|| self.err(at, "unterminated character constant"))?;
                    if ch == '\\' || !rest[ch.len_utf8()..].starts_with('\'') {
                        return Err(self.err(at, "unsupported character constant"));
                    }
                    self.pos += 2 + ch.len_utf8();
                    self.toks.push((Tok::Num(Number::Int(ch as i64)), at));
                }
                b'.' => {
                    if bytes.get(self.pos + 1).is_some_and(|b| b.is_ascii_digit()) {
                        let n = self.number()?;
                        self.toks.push((Tok::Num(n), at));
                    } else if bytes
                        .get(self.pos + 1)
                        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                    {
                        let chain = self.fields()?;
                        self.toks.push((Tok::Field(chain), at));
                    } else {
                        self.pos += 1;
                        self.toks.push((Tok::Dot, at));
                    }
                }
                b'$' => {
                    self.pos += 1;
                    let name_len = self.src[self.pos..]
                        .bytes()
                        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                        .count();
                    let name = format!("${}", &self.src[self.pos..self.pos + name_len]);
                    self.pos += name_len;
                    let chain = if self.src[self.pos..].starts_with('.') {
                        self.fields()?
                    } else {
                        Vec::new()
                    };
                    self.toks.push((Tok::Var(name, chain), at));
                }
                b'0'..=b'9' | b'-' | b'+' => {
                    let n = self.number()?;
                    self.toks.push((Tok::Num(n), at));
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let len = self.src[self.pos..]
                        .bytes()
                        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                        .count();
                    let word = self.src[self.pos..self.pos + len].to_owned();
                    self.pos += len;
                    self.toks.push((Tok::Ident(word), at));
                }
                _ => {
                    let ch = self.src[self.pos..].chars().next().unwrap_or('?');
                    return Err(self.err(at, format!("unexpected {ch:?} in command")));
                }
            }
        }
    }

    fn fields(&mut self) -> Result<Vec<String>, TemplateError> {
        let mut out = Vec::new();
        while self.src[self.pos..].starts_with('.') {
            let at = self.pos;
            self.pos += 1;
            let len = self.src[self.pos..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len == 0 {
                return Err(self.err(at, "bad character in field chain"));
            }
            out.push(self.src[self.pos..self.pos + len].to_owned());
            self.pos += len;
        }
        Ok(out)
    }

    fn number(&mut self) -> Result<Number, TemplateError> {
        let at = self.pos;
        let len = self.src[self.pos..]
            .char_indices()
            .take_while(|&(i, c)| {
                c.is_ascii_alphanumeric()
                    || c == '.'
                    || c == '_'
                    || ((c == '-' || c == '+') && i == 0)
                    || ((c == '-' || c == '+')
                        && matches!(
                            self.src.as_bytes()[self.pos..].get(i.wrapping_sub(1)),
                            Some(b'e' | b'E' | b'p' | b'P')
                        ))
            })
            .count();
        let text = &self.src[self.pos..self.pos + len];
        self.pos += len;
        parse_number(text).ok_or_else(|| self.err(at, format!("bad number syntax: {text:?}")))
    }

    fn quoted(&mut self) -> Result<String, TemplateError> {
        let at = self.pos;
        let mut out = String::new();
        let mut chars = self.src[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 2;
                    return Ok(out);
                }
                '\n' => break,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('a') => out.push('\u{7}'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some(k @ ('x' | 'u' | 'U')) => {
                        let n = match k {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = (0..n)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.err(at, "invalid escape in string"))?;
                        out.push(code);
                    }
                    _ => return Err(self.err(at, "invalid escape in string")),
                },
                c => out.push(c),
            }
        }
        Err(self.err(at, "unterminated quoted string"))
    }
}

fn parse_number(text: &str) -> Option<Number> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let body = body.replace('_', "");
    let int = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        i64::from_str_radix(oct, 8).ok()
    } else if let Some(bin) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        i64::from_str_radix(bin, 2).ok()
    } else if body.bytes().all(|b| b.is_ascii_digit()) && !body.is_empty() {
        body.parse().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(Number::Int(if neg { -i } else { i }));
    }
    if !body.bytes().next()?.is_ascii_digit() && !body.starts_with('.') {
        return None;
    }
    let f: f64 = body.parse().ok()?;
    Some(Number::Float(if neg { -f } else { f }))
}

/// Parses `text`; `funcs` are the known function names, `vars` the predeclared variables.
pub fn parse(text: &str, funcs: &HashSet<&str>, vars: &[&str]) -> Result<Vec<Node>, TemplateError> {
    let toks = Lexer {
        src: text,
        pos: 0,
        toks: Vec::new(),
    }
    .run()?;
    let mut parser = Parser {
        src: text,
        toks,
        pos: 0,
        funcs,
        scopes: vec![
            vars.iter()
                .map(|v| (*v).to_owned())
                .chain(["$".to_owned()])
                .collect(),
        ],
        range_depth: 0,
    };
    let (nodes, end) = parser.list()?;
    if let Some(end) = end {
        return Err(parser.err_at(parser.pos, format!("unexpected {{{{{end}}}}}")));
    }
    Ok(nodes)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    funcs: &'a HashSet<&'a str>,
    scopes: Vec<Vec<String>>,
    range_depth: usize,
}

impl Parser<'_> {
    fn err_at(&self, tok: usize, message: impl Into<String>) -> TemplateError {
        let offset = self
            .toks
            .get(tok)
            .or(self.toks.last())
            .map_or(0, |(_, at)| *at);
        TemplateError::Parse {
            line: line_of(self.src, offset),
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }

    fn expect_close(&mut self, what: &str) -> Result<(), TemplateError> {
        match self.next() {
            Some(Tok::Close) => Ok(()),
            _ => Err(self.err_at(self.pos - 1, format!("unexpected token in {what}"))),
        }
    }

    /// Parses nodes until `{{end}}`/`{{else ...}}` (returned, consumed up to the keyword) or
    /// the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(tok) = self.next() {
            match tok {
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::Open => {
                    if let Some(Tok::Ident(word)) = self.peek().cloned() {
                        match word.as_str() {
                            "end" | "else" => {
                                self.pos += 1;
                                return Ok((nodes, Some(word)));
                            }
                            "if" | "with" | "range" => {
                                self.pos += 1;
                                nodes.push(self.branch(&word)?);
                                continue;
                            }
                            "break" | "continue" => {
                                self.pos += 1;
                                if self.range_depth == 0 {
                                    return Err(self.err_at(
                                        self.pos - 1,
                                        format!("{{{{{word}}}}} outside {{{{range}}}}"),
                                    ));
                                }
                                self.expect_close(&word)?;
                                nodes.push(if word == "break" {
                                    Node::Break
                                } else {
                                    Node::Continue
                                });
                                continue;
                            }
                            "define" | "template" | "block" => {
                                return Err(self.err_at(
                                    self.pos,
                                    format!(
                                        "{{{{{word}}}}} is not supported in Sonde's rule templates"
                                    ),
                                ));
                            }
                            _ => {}
                        }
                    }
                    let pipe = self.pipeline("command", true)?;
                    self.expect_close("command")?;
                    nodes.push(Node::Action(pipe));
                }
                _ => return Err(self.err_at(self.pos - 1, "unexpected token")),
            }
        }
        Ok((nodes, None))
    }

    fn branch(&mut self, word: &str) -> Result<Node, TemplateError> {
        let kind = match word {
            "if" => BranchKind::If,
            "with" => BranchKind::With,
            _ => BranchKind::Range,
        };
        self.scopes.push(Vec::new());
        let pipe = self.pipeline(word, kind == BranchKind::Range || kind == BranchKind::With)?;
        self.expect_close(word)?;
        if kind == BranchKind::Range {
            self.range_depth += 1;
        }
        let (then, end) = self.list()?;
        if kind == BranchKind::Range {
            self.range_depth -= 1;
        }
        self.scopes.pop();
        let otherwise = match end.as_deref() {
            Some("end") => {
                self.expect_close("end")?;
                Vec::new()
            }
            Some("else") => {
                if kind == BranchKind::If && matches!(self.peek(), Some(Tok::Ident(w)) if w == "if")
                {
                    // `{{else if …}}` … `{{end}}`: the nested if consumes the shared end.
                    self.pos += 1;
                    vec![self.branch("if")?]
                } else {
                    self.expect_close("else")?;
                    self.scopes.push(Vec::new());
                    let (otherwise, end) = self.list()?;
                    self.scopes.pop();
                    if end.as_deref() != Some("end") {
                        return Err(
                            self.err_at(self.pos, format!("missing {{{{end}}}} for {word}"))
                        );
                    }
                    self.expect_close("end")?;
                    otherwise
                }
            }
            _ => {
                return Err(self.err_at(
                    self.pos,
                    format!("unexpected EOF: missing {{{{end}}}} for {word}"),
                ));
            }
        };
        Ok(Node::Branch {
            kind,
            pipe,
            then,
            otherwise,
        })
    }

    fn declared(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|v| v == name))
    }

    fn pipeline(&mut self, context: &str, allow_decl: bool) -> Result<Pipeline, TemplateError> {
        let mut vars = Vec::new();
        let mut assign = false;
        // Declarations: `$x :=`, `$x =`, `$i, $v :=`.
        let save = self.pos;
        if allow_decl {
            let mut names = Vec::new();
            loop {
                match (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
                    (Some((Tok::Var(name, chain), _)), Some((Tok::Comma, _)))
                        if chain.is_empty() =>
                    {
                        names.push(name.clone());
                        self.pos += 2;
                    }
                    (Some((Tok::Var(name, chain), _)), Some((Tok::Declare | Tok::Assign, _)))
                        if chain.is_empty() =>
                    {
                        names.push(name.clone());
                        assign = matches!(self.toks[self.pos + 1].0, Tok::Assign);
                        self.pos += 2;
                        vars = names;
                        break;
                    }
                    _ => {
                        self.pos = save;
                        break;
                    }
                }
            }
        }
        if vars.len() > 2 || (vars.len() == 2 && !context.starts_with("range")) {
            return Err(self.err_at(save, format!("too many declarations in {context}")));
        }
        if assign {
            for v in &vars {
                if !self.declared(v) {
                    return Err(self.err_at(save, format!("undefined variable {v:?}")));
                }
            }
        }
        let mut cmds = Vec::new();
        loop {
            cmds.push(self.command()?);
            if matches!(self.peek(), Some(Tok::Pipe)) {
                self.pos += 1;
            } else {
                break;
            }
        }
        if !assign && let Some(scope) = self.scopes.last_mut() {
            scope.extend(vars.iter().cloned());
        }
        Ok(Pipeline { vars, assign, cmds })
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let mut args = Vec::new();
        while let Some(tok) = self.peek().cloned() {
            let at = self.pos;
            let term = match tok {
                Tok::Close | Tok::Pipe | Tok::RParen => break,
                Tok::Ident(word) => {
                    self.pos += 1;
                    match word.as_str() {
                        "true" => Term::Bool(true),
                        "false" => Term::Bool(false),
                        "nil" => Term::Nil,
                        w if self.funcs.contains(w) => Term::Func(word),
                        _ => {
                            return Err(self.err_at(at, format!("function {word:?} not defined")));
                        }
                    }
                }
                Tok::Dot => {
                    self.pos += 1;
                    Term::Dot
                }
                Tok::Field(chain) => {
                    self.pos += 1;
                    Term::Field(chain)
                }
                Tok::Var(name, chain) => {
                    self.pos += 1;
                    if !self.declared(&name) {
                        return Err(self.err_at(at, format!("undefined variable {name:?}")));
                    }
                    Term::Var(name, chain)
                }
                Tok::Str(s) => {
                    self.pos += 1;
                    Term::Str(s)
                }
                Tok::Num(n) => {
                    self.pos += 1;
                    Term::Num(n)
                }
                Tok::LParen => {
                    self.pos += 1;
                    self.scopes.push(Vec::new());
                    let inner = self.pipeline("parenthesized pipeline", true)?;
                    self.scopes.pop();
                    if self.next() != Some(Tok::RParen) {
                        return Err(self.err_at(at, "unclosed left paren"));
                    }
                    let chain = match self.peek() {
                        Some(Tok::Chain(c)) => {
                            let c = c.clone();
                            self.pos += 1;
                            c
                        }
                        _ => Vec::new(),
                    };
                    Term::Pipe(Box::new(inner), chain)
                }
                _ => return Err(self.err_at(at, "unexpected token in operand")),
            };
            args.push(term);
        }
        if args.is_empty() {
            return Err(self.err_at(self.pos, "missing value for command"));
        }
        Ok(Command { args })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn funcs() -> HashSet<&'static str> {
        ["printf", "humanize", "eq", "len"].into_iter().collect()
    }

    #[test]
    fn parses_actions_text_and_trim_markers() {
        let nodes = parse("a {{- $labels.job -}} b", &funcs(), &["$labels"]).unwrap();
        assert_eq!(
            nodes,
            vec![
                Node::Text("a".into()),
                Node::Action(Pipeline {
                    vars: vec![],
                    assign: false,
                    cmds: vec![Command {
                        args: vec![Term::Var("$labels".into(), vec!["job".into()])]
                    }]
                }),
                Node::Text("b".into()),
            ]
        );
    }

    #[test]
    fn parses_branches_and_pipelines() {
        let nodes = parse(
            "{{ if eq (len .) 1 }}one{{ else if gt 2 1 }}x{{ else }}many{{ end }}{{ $value | humanize }}{{/* c */}}",
            &["eq", "len", "gt", "humanize"].into_iter().collect(),
            &["$value"],
        )
        .unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(
            matches!(&nodes[0], Node::Branch { kind: BranchKind::If, otherwise, .. } if otherwise.len() == 1)
        );
    }

    #[test]
    fn reports_unknown_functions_variables_and_unclosed_blocks() {
        let f = funcs();
        let err = |t: &str| parse(t, &f, &["$labels"]).unwrap_err().to_string();
        assert!(err("{{ nosuch 1 }}").contains("function \"nosuch\" not defined"));
        assert!(err("{{ $x }}").contains("undefined variable \"$x\""));
        assert!(err("{{ if 1 }}x").contains("missing {{end}}"));
        assert!(err("{{ 1 ").contains("unclosed action"));
        assert!(err("{{ template \"x\" }}").contains("not supported"));
    }

    #[test]
    fn declarations_scope_to_their_block() {
        let f = funcs();
        assert!(parse("{{ $x := 1 }}{{ $x }}{{ $x = 2 }}", &f, &[]).is_ok());
        assert!(parse("{{ range $i, $v := . }}{{ $i }}{{ end }}{{ $i }}", &f, &[]).is_err());
    }

    #[test]
    fn numbers_and_strings() {
        assert_eq!(parse_number("-3"), Some(Number::Int(-3)));
        assert_eq!(parse_number("0x1f"), Some(Number::Int(31)));
        assert_eq!(parse_number("1.5e3"), Some(Number::Float(1500.0)));
        assert_eq!(parse_number("1e"), None);
        let nodes = parse(r#"{{ "a\"b\n" }}{{ `raw}}` }}"#, &funcs(), &[]).unwrap();
        assert_eq!(nodes.len(), 2);
    }
}
