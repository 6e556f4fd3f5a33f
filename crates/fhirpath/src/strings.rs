//! FHIRPath 2.1 `encode` / `decode` / `escape` / `unescape`.

use crate::compile::Func;

use veil_util::base64::{self, STANDARD as B64, URL_SAFE as B64URL};

/// Applies one of the four functions with its format argument; `None` when
/// the format is unknown or the input cannot be decoded.
pub(crate) fn transcode(func: Func, s: &str, format: &str) -> Option<String> {
    match (func, format) {
        (Func::Encode, "base64") => Some(base64::encode(s.as_bytes(), B64)),
        (Func::Encode, "urlbase64") => Some(base64::encode(s.as_bytes(), B64URL)),
        (Func::Encode, "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        (Func::Decode, "base64") => String::from_utf8(base64::decode(s, B64)?).ok(),
        (Func::Decode, "urlbase64") => String::from_utf8(base64::decode(s, B64URL)?).ok(),
        (Func::Decode, "hex") => {
            if !s.len().is_multiple_of(2) {
                return None;
            }
            let bytes: Option<Vec<u8>> =
                (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
            String::from_utf8(bytes?).ok()
        }
        (Func::Escape, "html") => Some(
            s.chars()
                .map(|c| match c {
                    '&' => "&amp;".to_string(),
                    '<' => "&lt;".to_string(),
                    '>' => "&gt;".to_string(),
                    '"' => "&quot;".to_string(),
                    '\'' => "&#39;".to_string(),
                    c => c.to_string(),
                })
                .collect(),
        ),
        (Func::Unescape, "html") => Some(
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        ),
        (Func::Escape, "json") => {
            let quoted = serde_json::to_string(s).ok()?;
            Some(quoted[1..quoted.len() - 1].to_string())
        }
        (Func::Unescape, "json") => {
            // Quotes may appear bare or escaped: escape bare ones, then let JSON read it.
            let mut quoted = String::with_capacity(s.len() + 2);
            quoted.push('"');
            let mut escaped = false;
            for c in s.chars() {
                if c == '"' && !escaped {
                    quoted.push('\\');
                }
                escaped = c == '\\' && !escaped;
                quoted.push(c);
            }
            quoted.push('"');
            serde_json::from_str::<String>(&quoted).ok()
        }
        _ => None,
    }
}
