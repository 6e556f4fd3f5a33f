//! Tokens of the FHIRPath grammar (FHIRPath N1 §Lexical elements), each with its byte span.

use crate::error::{Error, Span};

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A plain or `` `delimited` `` identifier; keywords are identifiers too
    /// and the parser decides by position.
    Ident {
        name: String,
        delimited: bool,
    },
    Str(String),
    /// An integer or decimal literal as written (scale matters: `1.50`).
    Number(String),
    /// `@2014-01-25T14:30` (date/dateTime) or `@T14:30` (time), without the `@`.
    DateTime(String),
    /// `%name`, `` %`name` `` or `%'name'`.
    External(String),
    /// `$this`, `$index`, `$total`.
    Special(String),
    Sym(&'static str),
    Eof,
}

pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

const SYMBOLS: [&str; 21] =
    ["!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/", "|", "&", "=", "~", "<"];

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if src[i..].starts_with("/*") {
            match src[i + 2..].find("*/") {
                Some(n) => i += n + 4,
                None => return Err(Error::syntax(src, Span::new(i, bytes.len()), "unterminated comment")),
            }
            continue;
        }
        let tok = match c {
            b'\'' => {
                let (s, end) = quoted(src, i, b'\'')?;
                i = end;
                Tok::Str(s)
            }
            b'`' => {
                let (s, end) = quoted(src, i, b'`')?;
                i = end;
                Tok::Ident { name: s, delimited: true }
            }
            b'%' => {
                i += 1;
                let name = match bytes.get(i) {
                    Some(b'`') | Some(b'\'') => {
                        let (s, end) = quoted(src, i, bytes[i])?;
                        i = end;
                        s
                    }
                    _ => {
                        let end = ident_end(bytes, i);
                        if end == i {
                            return Err(Error::syntax(src, Span::new(start, i), "expected a name after '%'"));
                        }
                        let s = src[i..end].to_string();
                        i = end;
                        s
                    }
                };
                Tok::External(name)
            }
            b'$' => {
                let end = ident_end(bytes, i + 1);
                let name = &src[i + 1..end];
                if !matches!(name, "this" | "index" | "total") {
                    return Err(Error::syntax(src, Span::new(i, end.max(i + 1)), "expected $this, $index or $total"));
                }
                i = end;
                Tok::Special(name.to_string())
            }
            b'@' => {
                let end = datetime_end(bytes, i + 1);
                if end == i + 1 {
                    return Err(Error::syntax(src, Span::new(i, i + 1), "expected a date or time after '@'"));
                }
                let text = src[i + 1..end].to_string();
                i = end;
                Tok::DateTime(text)
            }
            b'0'..=b'9' => {
                let mut end = i;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                // A decimal point counts only when a digit follows: `1.abs()` is a call.
                if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
                    end += 1;
                    while end < bytes.len() && bytes[end].is_ascii_digit() {
                        end += 1;
                    }
                }
                let text = src[i..end].to_string();
                i = end;
                Tok::Number(text)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = ident_end(bytes, i);
                let name = src[i..end].to_string();
                i = end;
                Tok::Ident { name, delimited: false }
            }
            _ => {
                let rest = &src[i..];
                let sym = SYMBOLS.iter().chain([">"].iter()).find(|s| rest.starts_with(**s));
                match sym {
                    Some(s) => {
                        i += s.len();
                        Tok::Sym(s)
                    }
                    None => {
                        let ch = rest.chars().next().unwrap_or('?');
                        return Err(Error::syntax(
                            src,
                            Span::new(i, i + ch.len_utf8()),
                            &format!("unexpected character {ch:?}"),
                        ));
                    }
                }
            }
        };
        out.push(Token { tok, span: Span::new(start, i) });
    }
    out.push(Token { tok: Tok::Eof, span: Span::new(bytes.len(), bytes.len()) });
    Ok(out)
}

fn ident_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i
}

/// The end of a date/time literal body: digits, `-`, `:`, `T`, `.`, `Z`, `+`.
/// A `-` or `+` only continues it where the grammar allows (date separators
/// and time-zone offsets), so `@2014 - 1 year` still lexes as a subtraction.
fn datetime_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    let mut seen_t = false;
    while i < bytes.len() {
        let c = bytes[i];
        let next_digit = bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit());
        match c {
            b'0'..=b'9' | b':' => i += 1,
            b'T' => {
                seen_t = true;
                i += 1
            }
            b'Z' => {
                i += 1;
                break;
            }
            b'.' if next_digit => i += 1,
            b'-' if next_digit && (!seen_t || i > start) => {
                // A date separator or a negative offset: both are directly
                // followed by two digits and preceded by a digit.
                if i == start || !bytes[i - 1].is_ascii_digit() {
                    break;
                }
                i += 1
            }
            b'+' if seen_t && next_digit => i += 1,
            _ => break,
        }
    }
    i
}

/// Reads a quoted string or delimited identifier starting at `start` (the quote).
fn quoted(src: &str, start: usize, quote: u8) -> Result<(String, usize), Error> {
    let bytes = src.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = bytes.get(i) else {
            return Err(Error::syntax(src, Span::new(start, bytes.len()), "unterminated string"));
        };
        if c == quote {
            return Ok((out, i + 1));
        }
        if c == b'\\' {
            let Some(&e) = bytes.get(i + 1) else {
                return Err(Error::syntax(src, Span::new(start, bytes.len()), "unterminated string"));
            };
            i += 2;
            match e {
                b'\'' => out.push('\''),
                b'"' => out.push('"'),
                b'`' => out.push('`'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hex = src.get(i..i + 4).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                    let ch = hex.and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32);
                    match ch {
                        Some(ch) => out.push(ch),
                        None => {
                            return Err(Error::syntax(src, Span::new(i - 2, i), "invalid \\u escape"));
                        }
                    }
                    i += 4;
                }
                _ => return Err(Error::syntax(src, Span::new(i - 2, i), "invalid escape sequence")),
            }
            continue;
        }
        let ch = src[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
}
