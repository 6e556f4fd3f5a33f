//! CSV as RFC 4180 writes it, for the tables Veil exports and serves.

use serde_json::Value as Json;

/// RFC 4180 CSV: a field quoted when it holds a comma, quote, CR or LF;
/// null is the empty field; arrays and objects are written as JSON.
pub fn line(fields: &[Json]) -> String {
    let mut line = String::new();
    for (i, v) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let text = match v {
            Json::Null => String::new(),
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text.contains([',', '"', '\r', '\n']) {
            line.push('"');
            line.push_str(&text.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(&text);
        }
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn rfc4180_quoting() {
        let decimal: serde_json::Value = serde_json::from_str("1.50").unwrap();
        assert_eq!(super::line(&[json!("a"), json!(null), decimal, json!(true)]), "a,,1.50,true\r\n");
        assert_eq!(
            super::line(&[json!("x,y"), json!("say \"hi\""), json!(["a", "b"])]),
            "\"x,y\",\"say \"\"hi\"\"\",\"[\"\"a\"\",\"\"b\"\"]\"\r\n"
        );
    }
}
