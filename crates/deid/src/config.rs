//! Microsoft FHIR anonymizer configuration files: parsing and validation with
//! the anonymizer's own rules (reference: ms-anonymizer.md §2), so that an
//! existing policy is accepted or refused exactly as Azure would, and a
//! refusal names the rule, its path and the reason.

use serde_json::{Map, Value as Json};
use veil_fhirpath::Expression;

use crate::json;

/// The built-in policies, by the name `veil deid -c NAME` takes, each
/// described in `policies/README.md`: one per HIPAA path, and Microsoft's
/// sample unchanged.
pub const BUILT_IN: [(&str, &str); 4] = [
    ("safe-harbor", include_str!("../policies/safe-harbor.json")),
    ("limited-data-set", include_str!("../policies/limited-data-set.json")),
    ("expert-shift", include_str!("../policies/expert-shift.json")),
    ("ms-sample", include_str!("../policies/ms-sample.json")),
];

const SAFE_HARBOR: &str = BUILT_IN[0].1;

/// A configuration the anonymizer would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not parseable as the anonymizer's JSON dialect; `line` is 1-based.
    #[error("failed to parse configuration file: line {line}: {reason}")]
    Parse {
        /// Where.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A top-level setting or parameter is invalid.
    #[error("{0}")]
    Setting(String),
    /// One rule is invalid.
    #[error("rule {index} (path {path:?}): {reason}")]
    Rule {
        /// 0-based position in `fhirPathRules`.
        index: usize,
        /// The rule's `path`, as written (an expression, not data).
        path: String,
        /// Why it is refused.
        reason: String,
    },
}

/// What to do when processing a resource fails (`processingErrors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingErrors {
    /// Stop with an error (the default).
    Raise,
    /// Write an empty resource of the same type, labelled REDACTED, and go on.
    Skip,
}

/// Where a date-shift offset comes from (`dateShiftScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateShiftScope {
    /// The id of the top-level resource of each file or line (the default).
    Resource,
    /// The input file's name.
    File,
    /// The input folder's name.
    Folder,
    /// Veil's extension: one offset per patient, for every resource in that
    /// patient's compartment, so that intervals within a record survive.
    Patient,
}

/// `perturb`'s `rangeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeType {
    /// The noise is within ± `span`.
    Fixed,
    /// The noise is within ± `span` × the value.
    Proportional,
}

/// What a rule does to the nodes it selects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Method {
    /// Remove the value (partial redaction per the parameters).
    Redact,
    /// Shift dates by a per-scope offset.
    DateShift,
    /// HMAC-SHA256 the value (the id part of references).
    CryptoHash,
    /// AES-CBC encrypt the value with a random IV, base64.
    Encrypt,
    /// Replace the node with `replaceWith`.
    Substitute {
        /// The replacement (null, a primitive or an object).
        replace_with: Json,
    },
    /// Add random noise to numbers and quantities.
    Perturb {
        /// Width of the noise.
        span: f64,
        /// Fixed or proportional.
        range_type: RangeType,
        /// Decimal places to round to (0 for integer types).
        round_to: u32,
    },
    /// Replace a value by the first case whose condition holds.
    Generalize {
        /// (condition, replacement) pairs, in order.
        cases: Vec<(Expression, Expression)>,
        /// Whether values matching no case are redacted (`true`) or kept.
        redact_others: bool,
    },
    /// Leave the nodes as they are and protect them from later rules.
    Keep,
    /// A method the anonymizer does not know: accepted with a warning, an
    /// error when a rule with it applies to a resource (as in the anonymizer).
    Unknown(String),
}

/// One `fhirPathRules` entry, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 0-based position in the file.
    pub index: usize,
    /// The path as written.
    pub path: String,
    /// The resource type it is scoped to (`Patient`, `Resource`, or empty for all).
    pub resource_type: String,
    /// The expression evaluated on each resource, `None` when the rule names
    /// a resource type only (`"path": "Patient"`) and so matches the resource itself.
    pub expression: Option<Expression>,
    /// What it does.
    pub method: Method,
}

/// `parameters`.
#[derive(Debug, Clone, Default)]
pub struct Parameters {
    /// `dateShiftKey`; `None` when absent or empty (a random key is used).
    pub date_shift_key: Option<String>,
    /// `dateShiftScope`.
    pub date_shift_scope: Option<DateShiftScope>,
    /// `dateShiftFixedOffsetInDays`.
    pub date_shift_fixed_offset_in_days: Option<i64>,
    /// `cryptoHashKey`.
    pub crypto_hash_key: Option<String>,
    /// `encryptKey`.
    pub encrypt_key: Option<String>,
    /// `enablePartialAgesForRedact`.
    pub partial_ages: bool,
    /// `enablePartialDatesForRedact`.
    pub partial_dates: bool,
    /// `enablePartialZipCodesForRedact`.
    pub partial_zip_codes: bool,
    /// `restrictedZipCodeTabulationAreas`.
    pub restricted_zip3: Vec<String>,
    /// `customSettings`, passed on verbatim.
    pub custom_settings: Option<Json>,
}

/// A validated anonymizer configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `processingErrors`.
    pub processing_errors: ProcessingErrors,
    /// The rules, in file order (which is their precedence).
    pub rules: Vec<Rule>,
    /// `parameters`.
    pub parameters: Parameters,
    /// Things the anonymizer only warns about (unknown methods, no `fhirVersion`).
    pub warnings: Vec<String>,
    /// Veil's extension (`"veil": {"onError": "quarantine"}`): leave a
    /// failing resource out with a reason instead of failing the whole input.
    pub quarantine: bool,
    /// Veil's extension (`"veil": {"exactDateShift": true}`): reproduce the
    /// anonymizer's offsets exactly, including the zero offset that one
    /// prefix in 101 gets (and which leaves its dates unchanged). Off by
    /// default: Veil shifts those by 51 days instead.
    pub exact_date_shift: bool,
    /// Veil's `veil.dateShiftToUtc`: shifted date-times are moved to UTC
    /// first and written with `Z`, so no original offset survives.
    pub date_shift_to_utc: bool,
}

/// Looks a key up the way Newtonsoft binds typed properties: exact name
/// first, then ignoring case.
fn get_ci<'m>(map: &'m Map<String, Json>, key: &str) -> Option<&'m Json> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// The .NET `ToString()` of a setting, which is how the anonymizer reads
/// rule settings it needs as text.
fn dotnet_string(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// A key: inline (`cryptoHashKey`), or Veil's extensions that keep secrets
/// out of policy files: `cryptoHashKeyFromEnv` names an environment
/// variable, `cryptoHashKeyFile` a file whose content (trimmed) is the key.
/// An empty or absent setting means "not configured" (a random key).
fn key_setting(params: &Map<String, Json>, name: &str) -> Result<Option<String>, ConfigError> {
    let string = |k: &str| -> Result<Option<String>, ConfigError> {
        match get_ci(params, k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.is_empty() => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::Setting(format!("parameters.{k} must be a string"))),
        }
    };
    let env_key = format!("{name}FromEnv");
    let file_key = format!("{name}File");
    let sources = [string(name)?.is_some(), string(&env_key)?.is_some(), string(&file_key)?.is_some()];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(ConfigError::Setting(format!("parameters: give only one of {name}, {env_key} and {file_key}")));
    }
    if let Some(var) = string(&env_key)? {
        // The message names the variable, never its value.
        let v = std::env::var(&var).map_err(|_| {
            ConfigError::Setting(format!("parameters.{env_key}: environment variable {var} is not set"))
        })?;
        return Ok(Some(v).filter(|v| !v.is_empty()));
    }
    if let Some(path) = string(&file_key)? {
        let v = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Setting(format!("parameters.{file_key}: cannot read {path}: {e}")))?;
        let v = v.trim().to_string();
        if v.is_empty() {
            return Err(ConfigError::Setting(format!("parameters.{file_key}: {path} is empty")));
        }
        return Ok(Some(v));
    }
    string(name)
}

fn bool_setting(params: &Map<String, Json>, name: &str) -> Result<bool, ConfigError> {
    match get_ci(params, name) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        // Newtonsoft coerces the strings "true" and "false".
        Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ConfigError::Setting(format!("parameters.{name} must be true or false"))),
    }
}

impl Policy {
    /// Veil's HIPAA Safe Harbor policy (`policies/safe-harbor.json`):
    /// every date cut to the year, free text, URLs, UIDs, telecom and
    /// addresses below state and ZIP3 removed, identifiers and references
    /// replaced by keyed pseudonyms.
    pub fn safe_harbor() -> Policy {
        Policy::parse(SAFE_HARBOR).expect("the built-in policy is valid")
    }

    /// The built-in policy called `name` (see [`BUILT_IN`]).
    pub fn built_in(name: &str) -> Option<Policy> {
        BUILT_IN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, text)| Policy::parse(text).expect("the built-in policies are valid"))
    }

    /// The Safe Harbor policy's text with `(path, method)` rules placed
    /// right after its first rule (which redacts every extension), so that
    /// they win over its own rules for what they match: the policy to pair
    /// with a study that needs something kept that Safe Harbor would
    /// remove. Checked as any policy is (and no longer Safe Harbor unless
    /// what the rules keep is not identifying).
    pub fn safe_harbor_with(first: &[(String, String)]) -> Result<String, ConfigError> {
        let mut doc = json::parse(SAFE_HARBOR).expect("the built-in policy is JSON");
        let rules = doc.get_mut("fhirPathRules").and_then(Json::as_array_mut).expect("the built-in policy has rules");
        for (i, (path, method)) in first.iter().enumerate() {
            let mut rule = Map::new();
            rule.insert("path".into(), Json::String(path.clone()));
            rule.insert("method".into(), Json::String(method.clone()));
            rules.insert(1 + i, Json::Object(rule));
        }
        let text = serde_json::to_string_pretty(&doc).expect("JSON serializes");
        Policy::parse(&text)?;
        Ok(text)
    }

    /// Parses and validates a configuration file's text.
    pub fn parse(text: &str) -> Result<Policy, ConfigError> {
        let doc = json::parse(text).map_err(|e| ConfigError::Parse { line: e.line, reason: e.reason })?;
        let Json::Object(top) = doc else {
            return Err(ConfigError::Parse { line: 1, reason: "the configuration must be a JSON object".into() });
        };
        let mut warnings = Vec::new();

        // 1. fhirVersion
        match get_ci(&top, "fhirVersion") {
            None | Some(Json::Null) => warnings.push("no fhirVersion given; assuming R4".into()),
            Some(Json::String(v)) if v.is_empty() => warnings.push("no fhirVersion given; assuming R4".into()),
            Some(Json::String(v)) if v.eq_ignore_ascii_case("R4") => {}
            Some(v) => {
                return Err(ConfigError::Setting(format!(
                    "Configuration of fhirVersion {} is not supported. Expected fhirVersion: R4",
                    dotnet_string(v)
                )));
            }
        }
        let processing_errors = match get_ci(&top, "processingErrors") {
            None | Some(Json::Null) => ProcessingErrors::Raise,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("raise") => ProcessingErrors::Raise,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("skip") => ProcessingErrors::Skip,
            Some(Json::Number(n)) if n.as_i64() == Some(0) => ProcessingErrors::Raise,
            Some(Json::Number(n)) if n.as_i64() == Some(1) => ProcessingErrors::Skip,
            Some(_) => return Err(ConfigError::Setting("processingErrors must be \"raise\" or \"skip\"".into())),
        };

        // 2. fhirPathRules
        let rules_json = match get_ci(&top, "fhirPathRules") {
            Some(Json::Array(rules)) => rules,
            None | Some(Json::Null) => {
                return Err(ConfigError::Setting(
                    "The configuration is invalid, please specify any fhirPathRules".into(),
                ));
            }
            Some(_) => return Err(ConfigError::Setting("fhirPathRules must be an array of rules".into())),
        };
        let mut rules = Vec::with_capacity(rules_json.len());
        for (index, r) in rules_json.iter().enumerate() {
            rules.push(parse_rule(index, r, &mut warnings)?);
        }

        // parameters
        let empty = Map::new();
        let params = match get_ci(&top, "parameters") {
            None | Some(Json::Null) => &empty,
            Some(Json::Object(p)) => p,
            Some(_) => return Err(ConfigError::Setting("parameters must be an object".into())),
        };
        let parameters = parse_parameters(params)?;
        let quarantine = match get_ci(&top, "veil").and_then(|v| v.get("onError")) {
            None | Some(Json::Null) => false,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("quarantine") => true,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("fail") => false,
            Some(_) => return Err(ConfigError::Setting("veil.onError must be \"fail\" or \"quarantine\"".into())),
        };
        let veil_flag = |name: &str| match get_ci(&top, "veil").and_then(|v| v.get(name)) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => Err(ConfigError::Setting(format!("veil.{name} must be true or false"))),
        };
        let exact_date_shift = veil_flag("exactDateShift")?;
        let date_shift_to_utc = veil_flag("dateShiftToUtc")?;
        for (name, key, method) in [
            ("dateShiftKey", &parameters.date_shift_key, Method::DateShift),
            ("cryptoHashKey", &parameters.crypto_hash_key, Method::CryptoHash),
            ("encryptKey", &parameters.encrypt_key, Method::Encrypt),
        ] {
            // A random key for a method no rule uses changes nothing.
            let used = rules.iter().any(|r| std::mem::discriminant(&r.method) == std::mem::discriminant(&method));
            if key.is_none() && used {
                warnings.push(format!(
                    "parameters.{name} is empty: a random key is used, so outputs will not be reproducible"
                ));
            } else if matches!(get_ci(params, name), Some(Json::String(s)) if !s.is_empty()) {
                // Whoever holds the policy could re-create the pseudonyms
                // (or undo the shift): keys belong apart from it.
                warnings.push(format!(
                    "parameters.{name} is written in the policy: anyone with the file can link its pseudonyms \
                     back; give {name}FromEnv or {name}File instead"
                ));
            }
        }

        // 4. encryptKey size (before random defaults, which are always valid).
        if let Some(key) = &parameters.encrypt_key {
            let bits = key.len() * 8;
            if ![128, 192, 256].contains(&bits) {
                return Err(ConfigError::Setting(format!(
                    "Invalid encrypt key size : {bits} bits! Please provide key sizes of 128, 192 or 256 bits."
                )));
            }
        }
        Ok(Policy { processing_errors, rules, parameters, warnings, quarantine, exact_date_shift, date_shift_to_utc })
    }
}

fn parse_parameters(p: &Map<String, Json>) -> Result<Parameters, ConfigError> {
    let date_shift_scope = match get_ci(p, "dateShiftScope") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(match s.to_ascii_lowercase().as_str() {
            "resource" => DateShiftScope::Resource,
            "file" => DateShiftScope::File,
            "folder" => DateShiftScope::Folder,
            "patient" => DateShiftScope::Patient,
            _ => {
                return Err(ConfigError::Setting(
                    "parameters.dateShiftScope must be resource, file, folder or (Veil) patient".into(),
                ));
            }
        }),
        Some(Json::Number(n)) => Some(match n.as_i64() {
            Some(0) => DateShiftScope::Resource,
            Some(1) => DateShiftScope::File,
            Some(2) => DateShiftScope::Folder,
            _ => return Err(ConfigError::Setting("parameters.dateShiftScope is out of range".into())),
        }),
        Some(_) => return Err(ConfigError::Setting("parameters.dateShiftScope must be a string".into())),
    };
    let date_shift_fixed_offset_in_days = match get_ci(p, "dateShiftFixedOffsetInDays") {
        None | Some(Json::Null) => None,
        Some(Json::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            ConfigError::Setting("parameters.dateShiftFixedOffsetInDays must be a whole number".into())
        })?),
        Some(Json::String(s)) => Some(s.trim().parse().map_err(|_| {
            ConfigError::Setting("parameters.dateShiftFixedOffsetInDays must be a whole number".into())
        })?),
        Some(_) => {
            return Err(ConfigError::Setting("parameters.dateShiftFixedOffsetInDays must be a whole number".into()));
        }
    };
    let restricted_zip3 = match get_ci(p, "restrictedZipCodeTabulationAreas") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.iter().map(dotnet_string).collect(),
        Some(_) => {
            return Err(ConfigError::Setting("parameters.restrictedZipCodeTabulationAreas must be an array".into()));
        }
    };
    Ok(Parameters {
        date_shift_key: key_setting(p, "dateShiftKey")?,
        date_shift_scope,
        date_shift_fixed_offset_in_days,
        crypto_hash_key: key_setting(p, "cryptoHashKey")?,
        encrypt_key: key_setting(p, "encryptKey")?,
        partial_ages: bool_setting(p, "enablePartialAgesForRedact")?,
        partial_dates: bool_setting(p, "enablePartialDatesForRedact")?,
        partial_zip_codes: bool_setting(p, "enablePartialZipCodesForRedact")?,
        restricted_zip3,
        custom_settings: get_ci(p, "customSettings").filter(|v| !v.is_null()).cloned(),
    })
}

/// Splits a rule path into its resource type and expression (§4.1):
/// `Patient.address` → (`Patient`, `address`); `nodesByType('X')` → (``, whole).
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    let b = path.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_uppercase) {
        return ("", path);
    }
    let end = b.iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(b.len());
    match b.get(end) {
        None => (&path[..end], path),
        Some(b'.') => (&path[..end], &path[end + 1..]),
        // A capitalised start followed by anything else (`Patient(`) is no type prefix.
        Some(_) => ("", path),
    }
}

fn parse_rule(index: usize, r: &Json, warnings: &mut Vec<String>) -> Result<Rule, ConfigError> {
    let rule_err = |path: &str, reason: String| ConfigError::Rule { index, path: path.to_string(), reason };
    let Json::Object(r) = r else {
        return Err(rule_err("", "Missing path or method in Fhir path rule config.".into()));
    };
    // Keys inside a rule are case-sensitive (a plain dictionary in the anonymizer).
    let (Some(path), Some(method)) = (r.get("path"), r.get("method")) else {
        return Err(rule_err(
            &r.get("path").map(dotnet_string).unwrap_or_default(),
            "Missing path or method in Fhir path rule config.".into(),
        ));
    };
    let path = dotnet_string(path);
    let method_name = dotnet_string(method);
    let err = |reason: String| rule_err(&path, reason);

    if let Err(e) = Expression::compile(&path) {
        return Err(err(format!("Invalid FHIR path {path}: {e}")));
    }
    let (resource_type, expr_src) = split_path(&path);
    let expression = if expr_src == path && !resource_type.is_empty() {
        None
    } else {
        Some(Expression::compile(expr_src).map_err(|e| err(format!("Invalid FHIR path {path}: {e}")))?)
    };

    let method = match method_name.to_ascii_lowercase().as_str() {
        "redact" => Method::Redact,
        "dateshift" => Method::DateShift,
        "cryptohash" => Method::CryptoHash,
        "encrypt" => Method::Encrypt,
        "keep" => Method::Keep,
        "substitute" => match r.get("replaceWith") {
            Some(v) => Method::Substitute { replace_with: v.clone() },
            None => return Err(err(format!("Missing replaceWith value in substitution rule at {path}."))),
        },
        "perturb" => parse_perturb(r, &path).map_err(err)?,
        "generalize" => parse_generalize(r, &path).map_err(err)?,
        _ => {
            warnings.push(format!("rule {index} (path {path:?}): method {method_name:?} is not built in"));
            Method::Unknown(method_name.clone())
        }
    };
    Ok(Rule { index, path: path.clone(), resource_type: resource_type.to_string(), expression, method })
}

fn parse_perturb(r: &Map<String, Json>, path: &str) -> Result<Method, String> {
    let round_to = match r.get("roundTo") {
        None => 2,
        Some(v) => match dotnet_string(v).trim().parse::<i32>() {
            Ok(n) if (0..=28).contains(&n) => n as u32,
            _ => return Err(format!("RoundTo value is invalid at {path}.")),
        },
    };
    let span = match r.get("span") {
        None => return Err(format!("Span value is required in perturb rule at {path}.")),
        Some(v) => match dotnet_string(v).trim().parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => s,
            _ => return Err(format!("Span value is invalid at {path}.")),
        },
    };
    let range_type = match r.get("rangeType").map(dotnet_string) {
        None => RangeType::Fixed,
        Some(s) if s.eq_ignore_ascii_case("fixed") => RangeType::Fixed,
        Some(s) if s.eq_ignore_ascii_case("proportional") => RangeType::Proportional,
        Some(_) => return Err(format!("RangeType value is invalid at {path}.")),
    };
    Ok(Method::Perturb { span, range_type, round_to })
}

fn parse_generalize(r: &Map<String, Json>, path: &str) -> Result<Method, String> {
    let cases_json = match r.get("cases") {
        None | Some(Json::Null) => return Err("Missing cases in FHIR path rule config.".into()),
        Some(Json::Object(m)) => m.clone(),
        Some(Json::String(s)) => match json::parse(s) {
            Ok(Json::Object(m)) => m,
            _ => return Err(format!("Invalid Json format {s}")),
        },
        Some(other) => return Err(format!("Invalid Json format {other}")),
    };
    let mut cases = Vec::with_capacity(cases_json.len());
    for (cond, value) in &cases_json {
        let value = dotnet_string(value);
        let compiled = Expression::compile(cond).and_then(|c| Ok((c, Expression::compile(&value)?)));
        match compiled {
            Ok(pair) => cases.push(pair),
            Err(e) => return Err(format!("Invalid cases expression {{{cond:?}:{value:?}}} at {path}: {e}")),
        }
    }
    let redact_others = match r.get("otherValues").map(dotnet_string) {
        None => true,
        Some(s) if s.eq_ignore_ascii_case("redact") => true,
        Some(s) if s.eq_ignore_ascii_case("keep") => false,
        Some(s) => return Err(format!("OtherValues setting is invalid at {s}.")),
    };
    Ok(Method::Generalize { cases, redact_others })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_error(rule: &str) -> String {
        let cfg = format!(
            "{{\"fhirVersion\": \"R4\", \"fhirPathRules\": [{{\"path\": \"Patient.name\", \"method\": \"keep\"}}, {rule}]}}"
        );
        match Policy::parse(&cfg) {
            Err(ConfigError::Rule { index, reason, .. }) => {
                assert_eq!(index, 1);
                reason
            }
            other => panic!("expected a rule error for {rule}, got {other:?}"),
        }
    }

    fn accepted(rule: &str) {
        let cfg = format!("{{\"fhirPathRules\": [{rule}]}}");
        if let Err(e) = Policy::parse(&cfg) {
            panic!("{rule} refused: {e}");
        }
    }

    #[test]
    fn fhir_version() {
        for v in ["\"Stu3\"", "\"r3\""] {
            let e = Policy::parse(&format!("{{\"fhirVersion\": {v}, \"fhirPathRules\": []}}")).unwrap_err();
            assert!(e.to_string().contains("is not supported. Expected fhirVersion: R4"), "{e}");
        }
        for v in ["\"R4\"", "\"r4\"", "\"\""] {
            Policy::parse(&format!("{{\"fhirVersion\": {v}, \"fhirPathRules\": []}}")).unwrap();
        }
        assert!(Policy::parse("{\"fhirPathRules\": []}").unwrap().warnings[0].contains("fhirVersion"));
        let e = Policy::parse("{\"fhirVersion\":\"\",\"abc\":\"123\"}").unwrap_err();
        assert_eq!(e.to_string(), "The configuration is invalid, please specify any fhirPathRules");
    }

    #[test]
    fn top_level_keys_ignore_case_and_unknown_keys() {
        let p =
            Policy::parse("{\"FHIRPATHRULES\": [], \"ProcessingErrors\": \"Skip\", \"processingError\": \"nonsense\"}")
                .unwrap();
        assert_eq!(p.processing_errors, ProcessingErrors::Skip);
        assert!(Policy::parse("{\"fhirPathRules\": [], \"processingErrors\": \"keep\"}").is_err());
    }

    #[test]
    fn rule_vectors_from_the_anonymizer_tests() {
        assert!(rule_error(r#"{"path": "Patient.name"}"#).contains("Missing path or method"));
        assert!(rule_error(r#"{"path": "invalid()", "method": "redact"}"#).starts_with("Invalid FHIR path invalid()"));
        assert!(rule_error(r#"{"path": "Patient", "method": "substitute"}"#).starts_with("Missing replaceWith"));
        accepted(r#"{"path": "Patient.name", "method": "substitute", "replaceWith": null}"#);
        for round_to in [r#""abc""#, "-1", "-200", r#""29""#, "29"] {
            let r = format!(r#"{{"path": "Patient.x", "method": "perturb", "span": 1, "roundTo": {round_to}}}"#);
            assert!(rule_error(&r).starts_with("RoundTo value is invalid"), "{round_to}");
        }
        accepted(r#"{"path": "Patient.x", "method": "perturb", "span": 1, "roundTo": 28}"#);
        for span in [r#""test""#, r#""-1""#] {
            let r = format!(r#"{{"path": "Patient.x", "method": "perturb", "span": {span}}}"#);
            assert!(rule_error(&r).starts_with("Span value is invalid"), "{span}");
        }
        for span in [r#""1""#, "1", "0.1"] {
            accepted(&format!(r#"{{"path": "Patient.x", "method": "perturb", "span": {span}}}"#));
        }
        assert!(rule_error(r#"{"path": "Patient.x", "method": "perturb"}"#).starts_with("Span value is required"));
        for rt in ["unknown", "Proportionaal"] {
            let r = format!(r#"{{"path": "Patient.x", "method": "perturb", "span": 1, "rangeType": "{rt}"}}"#);
            assert!(rule_error(&r).starts_with("RangeType value is invalid"), "{rt}");
        }
        accepted(r#"{"path": "Patient.x", "method": "perturb", "span": 1, "rangeType": "Proportional"}"#);
        assert!(rule_error(r#"{"path": "Patient.x", "method": "generalize"}"#).starts_with("Missing cases"));
        for cases in [
            r#"{"$this<=10 add $this>=0":"10"}"#,
            r#"{"$this<=10 and $this>=0":"10 add"}"#,
            r#"{"$this sub 1":"10"}"#,
            r#"{"":""}"#,
            r#"{"$this>=0 && $this<10":"10"}"#,
        ] {
            let r = format!(r#"{{"path": "Patient.x", "method": "generalize", "cases": {cases}}}"#);
            assert!(rule_error(&r).starts_with("Invalid cases expression"), "{cases}");
        }
        let r =
            r#"{"path": "Patient.x", "method": "generalize", "cases": {"$this > 1": "1"}, "otherValues": "unknown"}"#;
        assert!(rule_error(r).starts_with("OtherValues setting is invalid"));
        accepted(
            r#"{"path": "Patient.x", "method": "generalize", "cases": "{\"$this > 1\": \"1\"}", "otherValues": "KEEP"}"#,
        );
    }

    #[test]
    fn unknown_methods_are_warnings_and_methods_ignore_case() {
        let p = Policy::parse(r#"{"fhirPathRules": [{"path": "Patient", "method": "skip"}, {"path": "nodesByType('date')", "method": "dateshift"}]}"#).unwrap();
        assert!(matches!(p.rules[0].method, Method::Unknown(_)));
        assert!(matches!(p.rules[1].method, Method::DateShift));
        assert_eq!(p.warnings.iter().filter(|w| w.contains("not built in")).count(), 1);
    }

    #[test]
    fn keys_from_the_environment_and_files() {
        // cargo sets CARGO_PKG_NAME for the tests it runs.
        let p = Policy::parse(r#"{"fhirPathRules": [], "parameters": {"cryptoHashKeyFromEnv": "CARGO_PKG_NAME"}}"#)
            .unwrap();
        assert_eq!(p.parameters.crypto_hash_key.as_deref(), Some("veil-deid"));
        let e = Policy::parse(
            r#"{"fhirPathRules": [], "parameters": {"cryptoHashKeyFromEnv": "VEIL_TEST_UNSET_VARIABLE"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameters.cryptoHashKeyFromEnv: environment variable VEIL_TEST_UNSET_VARIABLE is not set"
        );
        let dir = std::env::temp_dir().join(format!("veil-key-{}", std::process::id()));
        std::fs::write(&dir, "0123456789abcdef\n").unwrap();
        let cfg =
            format!(r#"{{"fhirPathRules": [], "parameters": {{"encryptKeyFile": {:?}}}}}"#, dir.display().to_string());
        let p = Policy::parse(&cfg).unwrap();
        assert_eq!(p.parameters.encrypt_key.as_deref(), Some("0123456789abcdef"));
        std::fs::write(&dir, "too short").unwrap();
        let e = Policy::parse(&cfg).unwrap_err();
        assert!(
            e.to_string().starts_with("Invalid encrypt key size"),
            "the size check applies to keys from files: {e}"
        );
        assert!(!e.to_string().contains("too short"), "no key in messages");
        std::fs::remove_file(&dir).unwrap();
        let both = r#"{"fhirPathRules": [], "parameters": {"dateShiftKey": "a", "dateShiftKeyFromEnv": "X"}}"#;
        assert!(Policy::parse(both).unwrap_err().to_string().contains("only one of"));
    }

    #[test]
    fn quarantine_extension() {
        assert!(Policy::parse(r#"{"fhirPathRules": [], "veil": {"onError": "quarantine"}}"#).unwrap().quarantine);
        assert!(!Policy::parse(r#"{"fhirPathRules": []}"#).unwrap().quarantine);
        assert!(Policy::parse(r#"{"fhirPathRules": [], "veil": {"onError": "ignore"}}"#).is_err());
    }

    #[test]
    fn encrypt_key_size() {
        let e = Policy::parse(r#"{"fhirPathRules": [], "parameters": {"encryptKey": "01234567890123456789"}}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid encrypt key size : 160 bits! Please provide key sizes of 128, 192 or 256 bits."
        );
        Policy::parse(r#"{"fhirPathRules": [], "parameters": {"encryptKey": "0123456789012345"}}"#).unwrap();
    }

    #[test]
    fn path_scoping() {
        assert_eq!(split_path("Patient.address"), ("Patient", "address"));
        assert_eq!(split_path("Patient.nodesByType('HumanName').use"), ("Patient", "nodesByType('HumanName').use"));
        assert_eq!(
            split_path("Condition.onset | Condition.abatement as Age"),
            ("Condition", "onset | Condition.abatement as Age")
        );
        assert_eq!(split_path("nodesByType('Address')"), ("", "nodesByType('Address')"));
        assert_eq!(
            split_path("(nodesByType('Observation').value as Quantity).value"),
            ("", "(nodesByType('Observation').value as Quantity).value")
        );
        assert_eq!(split_path("Patient"), ("Patient", "Patient"));
        let p = Policy::parse(r#"{"fhirPathRules": [{"path": "Patient", "method": "keep"}]}"#).unwrap();
        assert!(p.rules[0].expression.is_none(), "a resource-type rule matches the resource itself");
    }

    #[test]
    fn the_microsoft_sample_loads_unchanged() {
        let p = Policy::built_in("ms-sample").unwrap();
        assert_eq!(p.rules.len(), 193);
        assert!(p.parameters.partial_dates && p.parameters.partial_ages && p.parameters.partial_zip_codes);
        assert_eq!(p.parameters.restricted_zip3.len(), 14);
        assert_eq!(p.parameters.crypto_hash_key, None, "empty keys mean random keys");
        assert_eq!(p.parameters.date_shift_scope, Some(DateShiftScope::Resource));
    }

    #[test]
    fn every_built_in_policy_loads_and_keys_written_inline_are_warned_of() {
        for (name, _) in BUILT_IN {
            let p = Policy::built_in(name).unwrap();
            assert!(!p.warnings.iter().any(|w| w.contains("written in the policy")), "{name}: no inline keys");
        }
        assert!(Policy::built_in("Safe-Harbor").is_some() && Policy::built_in("safe-harbour").is_none());
        let inline = Policy::parse(r#"{"fhirPathRules": [], "parameters": {"cryptoHashKey": "k"}}"#).unwrap();
        assert_eq!(inline.warnings.iter().filter(|w| w.contains("cryptoHashKey is written in the policy")).count(), 1);
        // An empty key is announced only when a rule needs it.
        let random = |p: &Policy, key: &str| p.warnings.iter().any(|w| w.contains(&format!("{key} is empty")));
        let sh = Policy::safe_harbor();
        assert!(random(&sh, "cryptoHashKey") && !random(&sh, "dateShiftKey") && !random(&sh, "encryptKey"));
        assert!(random(&Policy::built_in("expert-shift").unwrap(), "dateShiftKey"));
    }
}
