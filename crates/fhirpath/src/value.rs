//! FHIRPath values: System types computed by expressions, and the typed view
//! of tree nodes that operators work on.

use std::cmp::Ordering;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::node::Node;
use crate::temporal::{Temporal, TemporalKind};

/// A value of one of FHIRPath's System types.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `System.Boolean`
    Boolean(bool),
    /// `System.String`
    String(String),
    /// `System.Integer`
    Integer(i64),
    /// `System.Decimal`, keeping its written scale.
    Decimal(Decimal),
    /// `System.Date`, `System.DateTime` or `System.Time`.
    Temporal(Temporal),
    /// `System.Quantity`: a decimal and a UCUM unit or calendar keyword.
    Quantity(Decimal, String),
    /// What `type()` returns: a type's namespace (`FHIR`, `System`) and name.
    TypeInfo {
        /// `FHIR` or `System`.
        namespace: &'static str,
        /// The type's name.
        name: &'static str,
    },
}

impl Value {
    /// The System type name (`Boolean`, `DateTime`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Boolean(_) => "Boolean",
            Value::String(_) => "String",
            Value::Integer(_) => "Integer",
            Value::Decimal(_) => "Decimal",
            Value::Temporal(t) => match t.kind {
                TemporalKind::Date => "Date",
                TemporalKind::DateTime => "DateTime",
                TemporalKind::Time => "Time",
            },
            Value::Quantity(..) => "Quantity",
            Value::TypeInfo { .. } => "TypeInfo",
        }
    }

    /// The value as JSON, the way FHIR writes it (quantities as
    /// `{"value":…,"unit":…}`).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Boolean(b) => Json::Bool(*b),
            Value::String(s) => Json::String(s.clone()),
            Value::Integer(i) => Json::from(*i),
            Value::Decimal(d) => decimal_json(d),
            Value::Temporal(t) => Json::String(t.to_string()),
            Value::Quantity(v, u) => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), decimal_json(v));
                m.insert("unit".into(), Json::String(u.clone()));
                Json::Object(m)
            }
            Value::TypeInfo { namespace, name } => {
                let mut m = serde_json::Map::new();
                m.insert("namespace".into(), Json::String((*namespace).into()));
                m.insert("name".into(), Json::String((*name).into()));
                Json::Object(m)
            }
        }
    }
}

pub(crate) fn decimal_json(d: &Decimal) -> Json {
    // With arbitrary_precision the number keeps its written digits.
    serde_json::from_str(&d.to_string()).unwrap_or(Json::Null)
}

/// Parses a decimal as written, keeping its scale; exponents are accepted.
pub(crate) fn parse_decimal(s: &str) -> Option<Decimal> {
    if s.contains(['e', 'E']) { Decimal::from_scientific(s).ok() } else { Decimal::from_str_exact(s).ok() }
}

/// The FHIR primitive types that are strings to FHIRPath.
fn is_string_like(ty: &str) -> bool {
    matches!(
        ty,
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "markdown" | "base64Binary" | "xhtml"
    )
}

/// The System value of a node, when it has one: primitives, and Quantity
/// (and its profiles) as `System.Quantity`. Nodes of unknown type are read
/// from their JSON shape.
pub(crate) fn node_value(node: &Node<'_>) -> Option<Value> {
    let json = node.value?;
    let ty = node.ty.name;
    match json {
        Json::Bool(b) => Some(Value::Boolean(*b)),
        Json::Number(n) => {
            let text = n.to_string();
            if matches!(ty, "integer" | "positiveInt" | "unsignedInt")
                || (ty.is_empty() && !text.contains(['.', 'e', 'E']))
            {
                text.parse().ok().map(Value::Integer)
            } else {
                parse_decimal(&text).map(Value::Decimal)
            }
        }
        Json::String(s) => Some(match ty {
            "date" => Temporal::parse_date(s).map_or_else(|| Value::String(s.clone()), Value::Temporal),
            "dateTime" | "instant" => {
                Temporal::parse_datetime(s).map_or_else(|| Value::String(s.clone()), Value::Temporal)
            }
            "time" => Temporal::parse_time(s).map_or_else(|| Value::String(s.clone()), Value::Temporal),
            "integer" | "positiveInt" | "unsignedInt" => {
                s.parse().map_or_else(|_| Value::String(s.clone()), Value::Integer)
            }
            "decimal" => parse_decimal(s).map_or_else(|| Value::String(s.clone()), Value::Decimal),
            t if t.is_empty() || is_string_like(t) => Value::String(s.clone()),
            _ => Value::String(s.clone()),
        }),
        Json::Object(map) if is_quantity_type(ty) => {
            let value = map.get("value").and_then(|v| match v {
                Json::Number(n) => parse_decimal(&n.to_string()),
                _ => None,
            })?;
            let unit = map.get("code").or_else(|| map.get("unit")).and_then(Json::as_str).unwrap_or("1").to_string();
            Some(Value::Quantity(value, unit))
        }
        _ => None,
    }
}

pub(crate) fn is_quantity_type(ty: &str) -> bool {
    matches!(ty, "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity" | "MoneyQuantity")
}

/// The System type name a FHIR primitive maps to.
pub(crate) fn system_type_of(fhir: &str) -> Option<&'static str> {
    Some(match fhir {
        "boolean" => "Boolean",
        "integer" | "positiveInt" | "unsignedInt" => "Integer",
        "decimal" => "Decimal",
        "date" => "Date",
        "dateTime" | "instant" => "DateTime",
        "time" => "Time",
        t if is_string_like(t) => "String",
        t if is_quantity_type(t) => "Quantity",
        _ => return None,
    })
}

// ---- units -------------------------------------------------------------

/// A unit's dimension and its factor to that dimension's base unit, for the
/// UCUM units common in clinical data and FHIRPath's calendar keywords.
/// Calendar years and months have no fixed length, so they convert only to
/// themselves.
fn unit_factor(unit: &str) -> Option<(&'static str, Decimal)> {
    let d = |s: &str| Decimal::from_str(s).expect("valid constant");
    Some(match unit {
        "year" | "years" => ("year", d("1")),
        "month" | "months" => ("month", d("1")),
        "a" => ("a", d("1")),
        "mo" => ("mo", d("1")),
        "week" | "weeks" | "wk" => ("s", d("604800")),
        "day" | "days" | "d" => ("s", d("86400")),
        "hour" | "hours" | "h" => ("s", d("3600")),
        "minute" | "minutes" | "min" => ("s", d("60")),
        "second" | "seconds" | "s" => ("s", d("1")),
        "millisecond" | "milliseconds" | "ms" => ("s", d("0.001")),
        "g" => ("g", d("1")),
        "mg" => ("g", d("0.001")),
        "ug" => ("g", d("0.000001")),
        "kg" => ("g", d("1000")),
        "[lb_av]" => ("g", d("453.59237")),
        "[oz_av]" => ("g", d("28.349523125")),
        "m" => ("m", d("1")),
        "cm" => ("m", d("0.01")),
        "mm" => ("m", d("0.001")),
        "km" => ("m", d("1000")),
        "[in_i]" => ("m", d("0.0254")),
        "[ft_i]" => ("m", d("0.3048")),
        "L" | "l" => ("L", d("1")),
        "mL" | "ml" => ("L", d("0.001")),
        "dL" | "dl" => ("L", d("0.1")),
        "1" => ("1", d("1")),
        _ => return None,
    })
}

/// Converts `v` in `from` to `to`, when the units share a dimension.
pub(crate) fn convert_quantity(v: Decimal, from: &str, to: &str) -> Option<Decimal> {
    if from == to {
        return Some(v);
    }
    let (df, ff) = unit_factor(from)?;
    let (dt, ft) = unit_factor(to)?;
    (df == dt).then(|| v * ff / ft)
}

/// Compares two quantities: `None` when the units are not comparable.
pub(crate) fn compare_quantities(a: (&Decimal, &str), b: (&Decimal, &str)) -> Option<Ordering> {
    let bv = convert_quantity(*b.0, b.1, a.1)?;
    Some(a.0.cmp(&bv))
}

// ---- strings -----------------------------------------------------------

/// `toString()` of a System value (N1 §toString).
pub(crate) fn to_fhirpath_string(v: &Value) -> String {
    match v {
        Value::Boolean(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Temporal(t) => t.to_string(),
        Value::Quantity(v, u) => {
            let calendar = matches!(
                u.as_str(),
                "year"
                    | "years"
                    | "month"
                    | "months"
                    | "week"
                    | "weeks"
                    | "day"
                    | "days"
                    | "hour"
                    | "hours"
                    | "minute"
                    | "minutes"
                    | "second"
                    | "seconds"
                    | "millisecond"
                    | "milliseconds"
            );
            if calendar { format!("{v} {u}") } else { format!("{v} '{u}'") }
        }
        Value::TypeInfo { namespace, name } => format!("{namespace}.{name}"),
    }
}
