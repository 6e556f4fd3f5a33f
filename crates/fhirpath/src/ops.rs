//! Operators: equality, equivalence, ordering, arithmetic (FHIRPath N1 §6).

use std::cmp::Ordering;

use rust_decimal::prelude::*;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::eval::Item;
use crate::temporal::{CalendarUnit, Temporal, TemporalKind};
use crate::value::{Value, compare_quantities, convert_quantity};

/// The typed value of an item, if it is a primitive or quantity.
pub(crate) fn value_of(item: &Item<'_>) -> Option<Value> {
    match item {
        Item::Value(v) => Some(v.clone()),
        Item::Node(n) => crate::value::node_value(n),
    }
}

fn as_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Integer(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// `=` on two single items; `None` is the empty result.
pub(crate) fn equal_items(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (value_of(a), value_of(b)) {
        (Some(x), Some(y)) => equal_values(&x, &y),
        (None, None) => match (a, b) {
            (Item::Node(x), Item::Node(y)) => Some(json_equal(x.value, y.value)),
            _ => Some(false),
        },
        _ => Some(false),
    }
}

fn json_equal(a: Option<&Json>, b: Option<&Json>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y,
        (None, None) => true,
        _ => false,
    }
}

pub(crate) fn equal_values(x: &Value, y: &Value) -> Option<bool> {
    Some(match (x, y) {
        (Value::Boolean(a), Value::Boolean(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Temporal(a), Value::Temporal(b)) => {
            if (a.kind == TemporalKind::Time) != (b.kind == TemporalKind::Time) {
                return Some(false);
            }
            return a.compare(b).map(|o| o == Ordering::Equal);
        }
        (Value::Quantity(av, au), Value::Quantity(bv, bu)) => {
            return compare_quantities((av, au), (bv, bu)).map(|o| o == Ordering::Equal);
        }
        _ => match (as_decimal(x), as_decimal(y)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    })
}

/// `~` on two single items.
pub(crate) fn equivalent_items(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (value_of(a), value_of(b)) {
        (Some(x), Some(y)) => equivalent_values(&x, &y),
        (None, None) => match (a, b) {
            (Item::Node(x), Item::Node(y)) => json_equal(x.value, y.value),
            _ => false,
        },
        _ => false,
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub(crate) fn equivalent_values(x: &Value, y: &Value) -> bool {
    match (x, y) {
        (Value::String(a), Value::String(b)) => normalize_ws(a) == normalize_ws(b),
        (Value::Temporal(a), Value::Temporal(b)) => a.compare(b) == Some(Ordering::Equal),
        (Value::Quantity(av, au), Value::Quantity(bv, bu)) => {
            // Equivalence compares at the precision of the less precise value.
            match convert_quantity(*bv, bu, au) {
                Some(bv) => decimals_equivalent(*av, bv),
                None => false,
            }
        }
        _ => match (as_decimal(x), as_decimal(y)) {
            (Some(a), Some(b)) => decimals_equivalent(a, b),
            _ => equal_values(x, y).unwrap_or(false),
        },
    }
}

fn decimals_equivalent(a: Decimal, b: Decimal) -> bool {
    let scale = a.scale().min(b.scale());
    a.round_dp(scale) == b.round_dp(scale)
}

/// Ordering of two values for `<`, `>`, `<=`, `>=` and sorting. `Ok(None)`
/// is the empty result; comparing values of different kinds is an error.
pub(crate) fn compare_values(x: &Value, y: &Value) -> Result<Option<Ordering>> {
    Ok(match (x, y) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Temporal(a), Value::Temporal(b)) => {
            if (a.kind == TemporalKind::Time) != (b.kind == TemporalKind::Time) {
                return Err(Error::eval("cannot compare a time with a date"));
            }
            a.compare(b)
        }
        (Value::Quantity(av, au), Value::Quantity(bv, bu)) => compare_quantities((av, au), (bv, bu)),
        _ => match (as_decimal(x), as_decimal(y)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => {
                return Err(Error::eval(format!("cannot compare {} with {}", x.type_name(), y.type_name())));
            }
        },
    })
}

/// Arithmetic on two single values: `+ - * / div mod` (and string `+`).
pub(crate) fn arithmetic(op: crate::parse::BinOp, x: &Value, y: &Value) -> Result<Option<Value>> {
    use crate::parse::BinOp::*;
    let type_error = || Error::eval(format!("cannot apply {op:?} to {} and {}", x.type_name(), y.type_name()));
    Ok(match (x, y) {
        (Value::String(a), Value::String(b)) if op == Add => Some(Value::String(format!("{a}{b}"))),
        (Value::Integer(a), Value::Integer(b)) => match op {
            Add => a.checked_add(*b).map(Value::Integer),
            Sub => a.checked_sub(*b).map(Value::Integer),
            Mul => a.checked_mul(*b).map(Value::Integer),
            Div => (*b != 0)
                .then(|| Decimal::from(*a).checked_div(Decimal::from(*b)))
                .flatten()
                .map(|d| Value::Decimal(d.normalize())),
            IntDiv => a.checked_div(*b).map(Value::Integer),
            Mod => a.checked_rem(*b).map(Value::Integer),
            _ => return Err(type_error()),
        },
        (Value::Temporal(t), Value::Quantity(v, unit)) if matches!(op, Add | Sub) => {
            Some(Value::Temporal(temporal_add(t, v, unit, op == Sub)?))
        }
        (Value::Quantity(av, au), Value::Quantity(bv, bu)) => match op {
            Add | Sub => {
                let bv = convert_quantity(*bv, bu, au).ok_or_else(type_error)?;
                let r = if op == Add { av.checked_add(bv) } else { av.checked_sub(bv) };
                r.map(|r| Value::Quantity(r, au.clone()))
            }
            Mul if au == "1" || bu == "1" => {
                let unit = if au == "1" { bu } else { au };
                av.checked_mul(*bv).map(|r| Value::Quantity(r, unit.clone()))
            }
            Div if au == bu => (!bv.is_zero())
                .then(|| av.checked_div(*bv))
                .flatten()
                .map(|r| Value::Quantity(r.normalize(), "1".into())),
            _ => return Err(type_error()),
        },
        (Value::Quantity(av, au), n) | (n, Value::Quantity(av, au)) if matches!(op, Mul) && as_decimal(n).is_some() => {
            av.checked_mul(as_decimal(n).unwrap_or_default()).map(|r| Value::Quantity(r, au.clone()))
        }
        (Value::Quantity(av, au), n) if op == Div && as_decimal(n).is_some() => {
            let d = as_decimal(n).unwrap_or_default();
            (!d.is_zero()).then(|| av.checked_div(d)).flatten().map(|r| Value::Quantity(r, au.clone()))
        }
        _ => {
            let (Some(a), Some(b)) = (as_decimal(x), as_decimal(y)) else {
                return Err(type_error());
            };
            match op {
                Add => a.checked_add(b).map(Value::Decimal),
                Sub => a.checked_sub(b).map(Value::Decimal),
                Mul => a.checked_mul(b).map(Value::Decimal),
                Div => (!b.is_zero()).then(|| a.checked_div(b)).flatten().map(|d| Value::Decimal(d.normalize())),
                IntDiv => (!b.is_zero())
                    .then(|| a.checked_div(b))
                    .flatten()
                    .and_then(|d| d.trunc().to_i64())
                    .map(Value::Integer),
                Mod => (!b.is_zero()).then(|| a.checked_rem(b)).flatten().map(Value::Decimal),
                _ => return Err(type_error()),
            }
        }
    })
}

fn temporal_add(t: &Temporal, amount: &Decimal, unit: &str, subtract: bool) -> Result<Temporal> {
    let unit = CalendarUnit::parse(unit)
        .ok_or_else(|| Error::eval("date arithmetic needs a calendar duration such as 1 year or 1 'd'"))?;
    // Only whole units are added (the HL7 suite: `+ 0.1 's'` leaves a value unchanged).
    let n = amount.trunc().to_i64().ok_or_else(|| Error::eval("date arithmetic out of range"))?;
    let n = if subtract { -n } else { n };
    t.add(n, unit).ok_or_else(|| Error::eval("date arithmetic out of range"))
}
