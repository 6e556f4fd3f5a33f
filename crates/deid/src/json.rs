//! The anonymizer's configuration JSON dialect (Newtonsoft's `JToken.Parse`
//! with duplicate keys refused): `//` and `/* */` comments, trailing commas
//! and a byte-order mark are accepted, a key repeated in one object is not.

use serde_json::{Map, Value as Json};

/// Why the text is not a configuration document, and where (1-based line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub line: usize,
    pub reason: String,
}

pub(crate) fn parse(text: &str) -> Result<Json, JsonError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser { s: text.as_bytes(), src: text, i: 0, depth: 0 };
    p.ws()?;
    let v = p.value()?;
    p.ws()?;
    if p.i < p.s.len() {
        return Err(p.err("unexpected text after the JSON value"));
    }
    Ok(v)
}

struct Parser<'s> {
    s: &'s [u8],
    src: &'s str,
    i: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 128;

impl Parser<'_> {
    fn err(&self, reason: &str) -> JsonError {
        let line = self.s[..self.i.min(self.s.len())].iter().filter(|b| **b == b'\n').count() + 1;
        JsonError { line, reason: reason.to_string() }
    }

    fn ws(&mut self) -> Result<(), JsonError> {
        loop {
            match self.s.get(self.i) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.i += 1,
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'/') => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'*') => match self.src[self.i + 2..].find("*/") {
                    Some(n) => self.i += n + 4,
                    None => return Err(self.err("unterminated comment")),
                },
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self) -> Result<Json, JsonError> {
        match self.s.get(self.i) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of the document")),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Result<Json, JsonError> {
        if self.src[self.i..].starts_with(w) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.i += 1;
        }
        // serde_json (with arbitrary_precision) keeps the digits as written.
        serde_json::from_str(&self.src[start..self.i]).map_err(|_| self.err("invalid number"))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return serde_json::from_str(&self.src[start..self.i]).map_err(|_| self.err("invalid string"));
                }
                _ => self.i += 1,
            }
        }
        Err(self.err("unterminated string"))
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(self.err("nested too deeply")) } else { Ok(()) }
    }

    fn array(&mut self) -> Result<Json, JsonError> {
        self.enter()?;
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws()?;
            if self.s.get(self.i) == Some(&b']') {
                self.i += 1;
                break;
            }
            items.push(self.value()?);
            self.ws()?;
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
        self.depth -= 1;
        Ok(Json::Array(items))
    }

    fn object(&mut self) -> Result<Json, JsonError> {
        self.enter()?;
        self.i += 1;
        let mut map = Map::new();
        loop {
            self.ws()?;
            match self.s.get(self.i) {
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                Some(b'"') => {}
                _ => return Err(self.err("expected a property name")),
            }
            let key = self.string()?;
            self.ws()?;
            if self.s.get(self.i) != Some(&b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws()?;
            let v = self.value()?;
            if map.contains_key(&key) {
                return Err(self.err(&format!("property \"{key}\" appears twice in one object")));
            }
            map.insert(key, v);
            self.ws()?;
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
        self.depth -= 1;
        Ok(Json::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_newtonsoft_dialect() {
        let v = parse("\u{feff}{ // comment\n \"a\": [1, 2.50,], /* block */ \"b\": {\"c\": null,}, }").unwrap();
        assert_eq!(v.to_string(), r#"{"a":[1,2.50],"b":{"c":null}}"#);
    }

    #[test]
    fn refuses_duplicates_and_garbage_with_lines() {
        assert_eq!(parse("{\n\"a\": 1,\n\"a\": 2}").unwrap_err().line, 3);
        assert!(parse("{\"a\": }").is_err());
        assert!(parse("{\"a\": 1} x").is_err());
        assert!(parse("/* open").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
        assert!(parse("").is_err());
    }
}
