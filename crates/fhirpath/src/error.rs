//! Errors. None of them carries a value from a resource: expression errors
//! quote the *expression* (written by an operator, not a patient), runtime
//! errors name functions, types and counts only.

use std::fmt;

/// A byte range in the expression text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    pub(crate) fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What went wrong, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not FHIRPath: `Patient.name.`, `1 +`, `'open`.
    Syntax,
    /// Well-formed but meaningless: an unknown function (`Patient.foo()`), a
    /// wrong number of arguments (`substring()`), an element the R4 model does
    /// not define under the focus's type (`Patient.name.given1`).
    Semantic,
    /// Failed while evaluating: `single()` over two items, `'a' + 1`,
    /// comparing a string with a number.
    Evaluation,
    /// Nesting or input too deep to evaluate safely.
    TooDeep,
    /// A node handle could not be followed or edited: it points at a computed
    /// value, or the resource no longer has a node there.
    Location,
}

/// A FHIRPath error: its kind, a message, and for expression errors the
/// place in the expression (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    position: Option<(usize, usize)>,
    span: Option<Span>,
}

impl Error {
    pub(crate) fn syntax(src: &str, span: Span, msg: &str) -> Error {
        Error::at(ErrorKind::Syntax, src, span, msg)
    }

    pub(crate) fn at(kind: ErrorKind, src: &str, span: Span, msg: &str) -> Error {
        let before = &src[..span.start.min(src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Error { kind, message: msg.to_string(), position: Some((line, col)), span: Some(span) }
    }

    pub(crate) fn eval(msg: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Evaluation, message: msg.into(), position: None, span: None }
    }

    pub(crate) fn new(kind: ErrorKind, msg: impl Into<String>) -> Error {
        Error { kind, message: msg.into(), position: None, span: None }
    }

    /// The kind of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The message without position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For errors in the expression text, the 1-based (line, column).
    pub fn position(&self) -> Option<(usize, usize)> {
        self.position
    }

    /// For errors in the expression text, the byte range.
    pub fn span(&self) -> Option<Span> {
        self.span
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
