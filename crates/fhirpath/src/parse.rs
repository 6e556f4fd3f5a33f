//! Hand-written recursive descent with precedence climbing over the FHIRPath
//! grammar (FHIRPath N1 §Operator precedence).

use crate::error::{Error, ErrorKind, Result, Span};
use crate::lex::{Tok, Token, lex};

/// Binary operators, in the spec's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Implies,
    Or,
    Xor,
    And,
    In,
    Contains,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    Lt,
    Gt,
    Le,
    Ge,
    Union,
    Add,
    Sub,
    Concat,
    Mul,
    Div,
    IntDiv,
    Mod,
}

/// A type specifier as written: `Quantity`, `FHIR.Patient`, `System.String`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TypeName {
    pub namespace: Option<String>,
    pub name: String,
}

/// The parsed expression tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Empty,
    Bool(bool),
    Str(String),
    Num(String),
    DateTime(String),
    Quantity { value: String, unit: String },
    Ident(String, Span),
    This,
    Index,
    Total,
    External(String, Span),
    Member(Box<Expr>, String, Span),
    Call { target: Option<Box<Expr>>, name: String, args: Vec<Expr>, span: Span },
    Indexer(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, TypeName, Span),
    As(Box<Expr>, TypeName, Span),
}

/// Nesting deeper than this is refused before it can exhaust the stack; no
/// real rule or view comes near it.
pub(crate) const MAX_DEPTH: usize = 128;

const CALENDAR_UNITS: [&str; 16] = [
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

pub(crate) fn parse(src: &str) -> Result<Expr> {
    let toks = lex(src)?;
    let mut p = Parser { src, toks, pos: 0, depth: 0 };
    let e = p.expr(0)?;
    if !matches!(p.peek(), Tok::Eof) {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn span(&self) -> Span {
        self.toks[self.pos].span
    }
    fn bump(&mut self) -> &Token {
        let t = &self.toks[self.pos];
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Sym(x) if *x == s)
    }
    fn expect_sym(&mut self, s: &str) -> Result<Span> {
        if self.is_sym(s) { Ok(self.bump().span) } else { Err(self.unexpected(&format!("'{s}'"))) }
    }
    fn unexpected(&self, expected: &str) -> Error {
        let found = match self.peek() {
            Tok::Eof => "the end of the expression".to_string(),
            _ => format!("'{}'", &self.src[self.span().start..self.span().end]),
        };
        Error::syntax(self.src, self.span(), &format!("expected {expected}, found {found}"))
    }

    /// The binary operator at the cursor, with its precedence (higher binds tighter).
    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek() {
            Tok::Sym(s) => match *s {
                "*" => (BinOp::Mul, 10),
                "/" => (BinOp::Div, 10),
                "+" => (BinOp::Add, 9),
                "-" => (BinOp::Sub, 9),
                "&" => (BinOp::Concat, 9),
                "|" => (BinOp::Union, 7),
                "<" => (BinOp::Lt, 6),
                ">" => (BinOp::Gt, 6),
                "<=" => (BinOp::Le, 6),
                ">=" => (BinOp::Ge, 6),
                "=" => (BinOp::Eq, 5),
                "!=" => (BinOp::Ne, 5),
                "~" => (BinOp::Equiv, 5),
                "!~" => (BinOp::NotEquiv, 5),
                _ => return None,
            },
            Tok::Ident { name, delimited: false } => match name.as_str() {
                "div" => (BinOp::IntDiv, 10),
                "mod" => (BinOp::Mod, 10),
                "in" => (BinOp::In, 4),
                "contains" => (BinOp::Contains, 4),
                "and" => (BinOp::And, 3),
                "or" => (BinOp::Or, 2),
                "xor" => (BinOp::Xor, 2),
                "implies" => (BinOp::Implies, 1),
                _ => return None,
            },
            _ => return None,
        })
    }

    fn type_op(&self) -> Option<bool> {
        match self.peek() {
            Tok::Ident { name, delimited: false } if name == "is" => Some(true),
            Tok::Ident { name, delimited: false } if name == "as" => Some(false),
            _ => None,
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::at(
                ErrorKind::TooDeep,
                self.src,
                self.span(),
                &format!("expression nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr> {
        let saved = self.depth;
        self.enter()?;
        let mut lhs = self.unary()?;
        loop {
            if let Some(is) = self.type_op() {
                if 8 < min_prec {
                    break;
                }
                self.enter()?;
                let op_span = self.bump().span;
                let (ty, ty_span) = self.type_name()?;
                let span = op_span.to(ty_span);
                lhs = if is { Expr::Is(Box::new(lhs), ty, span) } else { Expr::As(Box::new(lhs), ty, span) };
                continue;
            }
            let Some((op, prec)) = self.binop() else { break };
            if prec < min_prec {
                break;
            }
            // Each operator in a left-leaning chain nests the tree one level
            // deeper, so it counts towards the depth limit like parentheses.
            self.enter()?;
            self.bump();
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth = saved;
        Ok(lhs)
    }

    fn type_name(&mut self) -> Result<(TypeName, Span)> {
        let start = self.span();
        let first = self.identifier("a type name")?;
        if self.is_sym(".") {
            self.bump();
            let second = self.identifier("a type name")?;
            let span = start.to(self.toks[self.pos - 1].span);
            return Ok((TypeName { namespace: Some(first), name: second }, span));
        }
        Ok((TypeName { namespace: None, name: first }, start))
    }

    fn identifier(&mut self, what: &str) -> Result<String> {
        match self.peek().clone() {
            Tok::Ident { name, .. } => {
                self.bump();
                Ok(name)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.is_sym("-") || self.is_sym("+") {
            let neg = self.is_sym("-");
            self.bump();
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(if neg { Expr::Neg(Box::new(inner)) } else { inner });
        }
        let saved = self.depth;
        let mut e = self.term()?;
        loop {
            if self.is_sym(".") || self.is_sym("[") {
                self.enter()?;
            }
            if self.is_sym(".") {
                self.bump();
                let span = self.span();
                let name = self.identifier("a name or function after '.'")?;
                if self.is_sym("(") {
                    let (args, end) = self.args()?;
                    e = Expr::Call { target: Some(Box::new(e)), name, args, span: span.to(end) };
                } else {
                    e = Expr::Member(Box::new(e), name, span);
                }
            } else if self.is_sym("[") {
                self.bump();
                let idx = self.expr(0)?;
                self.expect_sym("]")?;
                e = Expr::Indexer(Box::new(e), Box::new(idx));
            } else {
                self.depth = saved;
                return Ok(e);
            }
        }
    }

    fn args(&mut self) -> Result<(Vec<Expr>, Span)> {
        self.expect_sym("(")?;
        let mut args = Vec::new();
        if !self.is_sym(")") {
            loop {
                args.push(self.expr(0)?);
                if self.is_sym(",") {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        let end = self.expect_sym(")")?;
        Ok((args, end))
    }

    fn term(&mut self) -> Result<Expr> {
        let span = self.span();
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::Str(s))
            }
            Tok::Number(n) => {
                self.bump();
                match self.peek().clone() {
                    Tok::Str(unit) => {
                        self.bump();
                        Ok(Expr::Quantity { value: n, unit })
                    }
                    Tok::Ident { name, delimited: false } if CALENDAR_UNITS.contains(&name.as_str()) => {
                        self.bump();
                        Ok(Expr::Quantity { value: n, unit: name })
                    }
                    _ => Ok(Expr::Num(n)),
                }
            }
            Tok::DateTime(d) => {
                self.bump();
                Ok(Expr::DateTime(d))
            }
            Tok::External(name) => {
                self.bump();
                Ok(Expr::External(name, span))
            }
            Tok::Special(name) => {
                self.bump();
                Ok(match name.as_str() {
                    "this" => Expr::This,
                    "index" => Expr::Index,
                    _ => Expr::Total,
                })
            }
            Tok::Sym("(") => {
                self.bump();
                let e = self.expr(0)?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("{") => {
                self.bump();
                self.expect_sym("}")?;
                Ok(Expr::Empty)
            }
            Tok::Ident { name, delimited } => {
                self.bump();
                if !delimited && self.is_sym("(") {
                    let (args, end) = self.args()?;
                    return Ok(Expr::Call { target: None, name, args, span: span.to(end) });
                }
                if !delimited {
                    match name.as_str() {
                        "true" => return Ok(Expr::Bool(true)),
                        "false" => return Ok(Expr::Bool(false)),
                        _ => {}
                    }
                }
                Ok(Expr::Ident(name, span))
            }
            _ => Err(self.unexpected("an expression")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn precedence_follows_the_spec() {
        // `as` binds tighter than `|` (the anonymizer's `onset | abatement as Age`).
        let e = parse("a | b as Age").unwrap();
        assert!(matches!(e, Expr::Binary(BinOp::Union, _, ref r) if matches!(**r, Expr::As(..))));
        // `is` binds tighter than `>`.
        let e = parse("1 > 2 is Boolean").unwrap();
        assert!(matches!(e, Expr::Binary(BinOp::Gt, _, ref r) if matches!(**r, Expr::Is(..))));
        // Unary minus applies to the whole invocation chain.
        assert!(matches!(parse("-1.abs()").unwrap(), Expr::Neg(_)));
        assert!(matches!(parse("2 + 3 * 4").unwrap(), Expr::Binary(BinOp::Add, ..)));
    }

    #[test]
    fn syntax_errors_have_positions() {
        assert_eq!(
            err("Patient.name."),
            "1:14: expected a name or function after '.', found the end of the expression"
        );
        assert_eq!(err("1 +"), "1:4: expected an expression, found the end of the expression");
        assert_eq!(err("'open"), "1:1: unterminated string");
        assert_eq!(err("a\n  .where(b = )"), "2:14: expected an expression, found ')'");
        assert_eq!(err("a b"), "1:3: expected an operator or the end of the expression, found 'b'");
        assert_eq!(err("a # b"), "1:3: unexpected character '#'");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "(".repeat(10_000) + "1" + &")".repeat(10_000);
        assert_eq!(parse(&deep).unwrap_err().kind(), &ErrorKind::TooDeep);
        let chain = "-".repeat(10_000) + "1";
        assert_eq!(parse(&chain).unwrap_err().kind(), &ErrorKind::TooDeep);
        let long_path = "a".to_string() + &".b".repeat(10_000);
        assert_eq!(parse(&long_path).unwrap_err().kind(), &ErrorKind::TooDeep);
        let long_sum = "1".to_string() + &" + 1".repeat(10_000);
        assert_eq!(parse(&long_sum).unwrap_err().kind(), &ErrorKind::TooDeep);
        let fine = "a".to_string() + &".b".repeat(100);
        assert!(parse(&fine).is_ok());
    }
}
