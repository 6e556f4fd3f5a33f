//! The function library (FHIRPath N1 §5 and §7, FHIR's additions, the
//! Microsoft anonymizer's `nodesByType` / `nodesByName`, SQL on FHIR's keys).

use rust_decimal::prelude::*;
use serde_json::Value as Json;

use crate::compile::{CArg, Func, TypeSpec};
use crate::error::{Error, Result};
use crate::eval::{
    Coll, Evaluator, Item, Scope, as_type, boolean, child, children, is_type, reflect_type, same_item, singleton,
    to_bool, union,
};
use crate::node::Node;
use crate::ops::value_of;
use crate::temporal::{Precision, Temporal, TemporalKind};
use crate::value::{Value, parse_decimal, to_fhirpath_string};

fn one<'a>(v: Value) -> Coll<'a> {
    vec![Item::Value(v)]
}

fn lambda_op(args: &[CArg], i: usize) -> Option<&crate::compile::Op> {
    match args.get(i) {
        Some(CArg::Lambda(op)) | Some(CArg::Value(op)) => Some(op),
        _ => None,
    }
}

fn type_arg(args: &[CArg]) -> Option<&TypeSpec> {
    match args.first() {
        Some(CArg::Type(t)) => Some(t),
        _ => None,
    }
}

/// The single string of an input collection (`None` when empty); an error
/// for anything else, as string functions require (N1 §5.6).
fn input_string(input: &Coll<'_>, func: Func) -> Result<Option<String>> {
    if let [Item::Node(n)] = input.as_slice()
        && n.json().is_some_and(|j| j.is_object() || j.is_array())
    {
        return Err(Error::eval(format!("{} expects a string, found {}", func.call(), n.fhir_type())));
    }
    match singleton(input, func.call())? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Error::eval(format!("{} expects a string, found {}", func.call(), v.type_name()))),
    }
}

/// The single value of argument `i`, converted by `pick`; `None` when the
/// argument is absent or empty, an error when it has another type.
fn arg_as<'a, T>(
    ev: &Evaluator<'_, 'a>,
    args: &[CArg],
    i: usize,
    scope: &Scope<'a>,
    func: Func,
    expected: &str,
    pick: fn(Value) -> Option<T>,
) -> Result<Option<T>> {
    let Some(c) = ev.arg(args, i, scope)? else { return Ok(None) };
    match singleton(&c, func.call())? {
        None => Ok(None),
        Some(v) => {
            let type_name = v.type_name();
            pick(v)
                .map(Some)
                .ok_or_else(|| Error::eval(format!("{} expects {expected} argument, found {type_name}", func.call())))
        }
    }
}

fn arg_string<'a>(
    ev: &Evaluator<'_, 'a>,
    args: &[CArg],
    i: usize,
    scope: &Scope<'a>,
    func: Func,
) -> Result<Option<String>> {
    arg_as(ev, args, i, scope, func, "a string", |v| match v {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn arg_integer<'a>(
    ev: &Evaluator<'_, 'a>,
    args: &[CArg],
    i: usize,
    scope: &Scope<'a>,
    func: Func,
) -> Result<Option<i64>> {
    arg_as(ev, args, i, scope, func, "an integer", |v| match v {
        Value::Integer(n) => Some(n),
        _ => None,
    })
}

fn number_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Integer(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

pub(crate) fn call<'a>(
    ev: &Evaluator<'_, 'a>,
    func: Func,
    input: Coll<'a>,
    args: &[CArg],
    scope: &Scope<'a>,
) -> Result<Coll<'a>> {
    use Func::*;
    Ok(match func {
        // ---- existence ----
        Empty => boolean(input.is_empty()),
        Exists => match lambda_op(args, 0) {
            None => boolean(!input.is_empty()),
            Some(op) => {
                for (i, item) in input.iter().enumerate() {
                    if to_bool(&ev.lambda(op, item, i, None)?, func.call())? == Some(true) {
                        return Ok(boolean(true));
                    }
                }
                boolean(false)
            }
        },
        All => {
            let op = lambda_op(args, 0).expect("arity checked");
            for (i, item) in input.iter().enumerate() {
                if to_bool(&ev.lambda(op, item, i, None)?, func.call())? != Some(true) {
                    return Ok(boolean(false));
                }
            }
            boolean(true)
        }
        AllTrue | AnyTrue | AllFalse | AnyFalse => {
            let mut bools = Vec::with_capacity(input.len());
            for item in &input {
                match value_of(item) {
                    Some(Value::Boolean(b)) => bools.push(b),
                    _ => return Err(Error::eval(format!("{} expects booleans", func.call()))),
                }
            }
            boolean(match func {
                AllTrue => bools.iter().all(|b| *b),
                AnyTrue => bools.iter().any(|b| *b),
                AllFalse => bools.iter().all(|b| !*b),
                _ => bools.iter().any(|b| !*b),
            })
        }
        SubsetOf | SupersetOf => {
            let other = ev.arg(args, 0, scope)?.unwrap_or_default();
            let (small, big) = if func == SubsetOf { (&input, &other) } else { (&other, &input) };
            boolean(small.iter().all(|a| big.iter().any(|b| same_item(a, b))))
        }
        Count => one(Value::Integer(input.len() as i64)),
        Distinct => union(input, Vec::new()),
        IsDistinct => {
            let n = input.len();
            boolean(union(input, Vec::new()).len() == n)
        }
        // ---- filtering ----
        Where => {
            let op = lambda_op(args, 0).expect("arity checked");
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                let r = ev.lambda(op, item, i, None)?;
                match r.as_slice() {
                    [] => {}
                    [only] => match value_of(only) {
                        Some(Value::Boolean(true)) => out.push(item.clone()),
                        Some(Value::Boolean(false)) => {}
                        _ => return Err(Error::eval(format!("{} criteria must be a boolean", func.call()))),
                    },
                    _ => return Err(Error::eval(format!("{} criteria must be a single boolean", func.call()))),
                }
            }
            out
        }
        Select => {
            let op = lambda_op(args, 0).expect("arity checked");
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(ev.lambda(op, item, i, None)?);
            }
            out
        }
        Repeat => {
            let op = lambda_op(args, 0).expect("arity checked");
            let mut out: Coll<'a> = Vec::new();
            let mut queue = input;
            // Iterative, with a cap, so that a cyclic projection cannot loop forever.
            let mut rounds = 0;
            while !queue.is_empty() {
                rounds += 1;
                if rounds > 10_000 {
                    return Err(Error::eval(format!("{} did not converge", func.call())));
                }
                let mut next = Vec::new();
                for (i, item) in queue.iter().enumerate() {
                    for r in ev.lambda(op, item, i, None)? {
                        if !out.iter().any(|o| same_item(o, &r)) {
                            out.push(r.clone());
                            next.push(r);
                        }
                    }
                }
                queue = next;
            }
            out
        }
        OfType => {
            let ty = type_arg(args).expect("compiled as type");
            input.into_iter().filter(|i| as_type(i, ty)).collect()
        }
        // ---- subsetting ----
        Single => match input.len() {
            0 | 1 => input,
            n => return Err(Error::eval(format!("{} found {n} items", func.call()))),
        },
        First => input.into_iter().take(1).collect(),
        Last => input.into_iter().last().into_iter().collect(),
        Tail => input.into_iter().skip(1).collect(),
        Skip => {
            let n = arg_integer(ev, args, 0, scope, func)?.unwrap_or(0).max(0) as usize;
            input.into_iter().skip(n).collect()
        }
        Take => {
            let n = arg_integer(ev, args, 0, scope, func)?.unwrap_or(0).max(0) as usize;
            input.into_iter().take(n).collect()
        }
        Intersect => {
            let other = ev.arg(args, 0, scope)?.unwrap_or_default();
            let kept: Coll<'a> = input.into_iter().filter(|a| other.iter().any(|b| same_item(a, b))).collect();
            union(kept, Vec::new())
        }
        Exclude => {
            let other = ev.arg(args, 0, scope)?.unwrap_or_default();
            input.into_iter().filter(|a| !other.iter().any(|b| same_item(a, b))).collect()
        }
        // ---- combining ----
        Union => union(input, ev.arg(args, 0, scope)?.unwrap_or_default()),
        Combine => {
            let mut out = input;
            out.extend(ev.arg(args, 0, scope)?.unwrap_or_default());
            out
        }
        // ---- conversion ----
        Iif => {
            if input.len() > 1 {
                return Err(Error::eval(format!("{} expects at most one input item", func.call())));
            }
            // The criterion and branches see the input item as $this.
            let sub = match input.first() {
                Some(item) => {
                    Scope { this: vec![item.clone()], root: false, index: scope.index, total: scope.total.clone() }
                }
                None => scope.clone(),
            };
            let cond = ev.eval(lambda_op(args, 0).expect("arity checked"), &sub)?;
            let chosen = match cond.as_slice() {
                [] => false,
                [c] => match value_of(c) {
                    Some(Value::Boolean(b)) => b,
                    _ => return Err(Error::eval(format!("{} criterion must be a boolean", func.call()))),
                },
                _ => return Err(Error::eval(format!("{} criterion must be a single boolean", func.call()))),
            };
            match (chosen, lambda_op(args, 1), lambda_op(args, 2)) {
                (true, Some(op), _) => ev.eval(op, &sub)?,
                (false, _, Some(op)) => ev.eval(op, &sub)?,
                _ => Vec::new(),
            }
        }
        ToBoolean | ConvertsToBoolean => convert(func, func == ConvertsToBoolean, &input, to_boolean)?,
        ToInteger | ConvertsToInteger => convert(func, func == ConvertsToInteger, &input, to_integer)?,
        ToDecimal | ConvertsToDecimal => convert(func, func == ConvertsToDecimal, &input, to_decimal)?,
        ToString | ConvertsToString => {
            convert(func, func == ConvertsToString, &input, |v| Some(Value::String(to_fhirpath_string(v))))?
        }
        ToDate | ConvertsToDate => convert(func, func == ConvertsToDate, &input, |v| match v {
            Value::String(s) => Temporal::parse_date(s).map(Value::Temporal),
            Value::Temporal(t) if t.kind != TemporalKind::Time => Some(Value::Temporal(t.to_date())),
            _ => None,
        })?,
        ToDateTime | ConvertsToDateTime => convert(func, func == ConvertsToDateTime, &input, |v| match v {
            Value::String(s) => Temporal::parse_datetime(s).map(Value::Temporal),
            Value::Temporal(t) if t.kind != TemporalKind::Time => Some(Value::Temporal(t.to_datetime())),
            _ => None,
        })?,
        ToTime | ConvertsToTime => convert(func, func == ConvertsToTime, &input, |v| match v {
            Value::String(s) => Temporal::parse_time(s).map(Value::Temporal),
            Value::Temporal(t) if t.kind == TemporalKind::Time => Some(v.clone()),
            _ => None,
        })?,
        ToQuantity | ConvertsToQuantity => {
            let unit = arg_string(ev, args, 0, scope, func)?;
            let converted = match singleton(&input, func.call())? {
                None => return Ok(Vec::new()),
                Some(v) => to_quantity(&v).and_then(|q| match (&q, &unit) {
                    (Value::Quantity(d, u), Some(target)) => {
                        crate::value::convert_quantity(*d, u, target).map(|d| Value::Quantity(d, target.clone()))
                    }
                    _ => Some(q),
                }),
            };
            if func == ConvertsToQuantity {
                boolean(converted.is_some())
            } else {
                converted.map(one).unwrap_or_default()
            }
        }
        // ---- strings ----
        IndexOf => {
            let (Some(s), Some(sub)) = (input_string(&input, func)?, arg_string(ev, args, 0, scope, func)?) else {
                return Ok(Vec::new());
            };
            let idx = s.find(&sub).map_or(-1, |b| s[..b].chars().count() as i64);
            one(Value::Integer(idx))
        }
        Substring => {
            let Some(s) = input_string(&input, func)? else { return Ok(Vec::new()) };
            let Some(start) = arg_integer(ev, args, 0, scope, func)? else { return Ok(Vec::new()) };
            let chars: Vec<char> = s.chars().collect();
            if start < 0 || start as usize >= chars.len() {
                return Ok(Vec::new());
            }
            let len = match args.len() {
                2 => match arg_integer(ev, args, 1, scope, func)? {
                    Some(l) => l.max(0) as usize,
                    None => chars.len(),
                },
                _ => chars.len(),
            };
            let start = start as usize;
            let end = start.saturating_add(len).min(chars.len());
            one(Value::String(chars[start..end].iter().collect()))
        }
        StartsWith | EndsWith => {
            let (Some(s), Some(p)) = (input_string(&input, func)?, arg_string(ev, args, 0, scope, func)?) else {
                return Ok(Vec::new());
            };
            boolean(if func == StartsWith { s.starts_with(&p) } else { s.ends_with(&p) })
        }
        Contains => {
            let (Some(s), Some(p)) = (input_string(&input, func)?, arg_string(ev, args, 0, scope, func)?) else {
                return Ok(Vec::new());
            };
            boolean(s.contains(&p))
        }
        Upper | Lower => match input_string(&input, func)? {
            Some(s) => one(Value::String(if func == Upper { s.to_uppercase() } else { s.to_lowercase() })),
            None => Vec::new(),
        },
        Replace => {
            let s = input_string(&input, func)?;
            let pat = arg_string(ev, args, 0, scope, func)?;
            let rep = arg_string(ev, args, 1, scope, func)?;
            match (s, pat, rep) {
                (Some(s), Some(p), Some(r)) => {
                    // An empty pattern inserts the replacement around every character (N1 §replace).
                    one(Value::String(if p.is_empty() { insert_between(&s, &r) } else { s.replace(&p, &r) }))
                }
                _ => Vec::new(),
            }
        }
        Matches | MatchesFull => {
            let (Some(s), Some(re)) = (input_string(&input, func)?, arg_string(ev, args, 0, scope, func)?) else {
                return Ok(Vec::new());
            };
            let re = if func == MatchesFull { format!("^(?:{re})$") } else { re };
            boolean(regex(&re)?.is_match(&s))
        }
        ReplaceMatches => {
            let s = input_string(&input, func)?;
            let re = arg_string(ev, args, 0, scope, func)?;
            let rep = arg_string(ev, args, 1, scope, func)?;
            match (s, re, rep) {
                (Some(s), Some(re), Some(rep)) => {
                    if re.is_empty() {
                        one(Value::String(s))
                    } else {
                        one(Value::String(regex(&re)?.replace_all(&s, rep.as_str()).into_owned()))
                    }
                }
                _ => Vec::new(),
            }
        }
        Length => match input_string(&input, func)? {
            Some(s) => one(Value::Integer(s.chars().count() as i64)),
            None => Vec::new(),
        },
        ToChars => match input_string(&input, func)? {
            Some(s) => s.chars().map(|c| Item::Value(Value::String(c.to_string()))).collect(),
            None => Vec::new(),
        },
        Trim => match input_string(&input, func)? {
            Some(s) => one(Value::String(s.trim().to_string())),
            None => Vec::new(),
        },
        Split => {
            let (Some(s), Some(sep)) = (input_string(&input, func)?, arg_string(ev, args, 0, scope, func)?) else {
                return Ok(Vec::new());
            };
            if sep.is_empty() {
                s.chars().map(|c| Item::Value(Value::String(c.to_string()))).collect()
            } else {
                s.split(sep.as_str()).map(|p| Item::Value(Value::String(p.to_string()))).collect()
            }
        }
        Join => {
            let sep = arg_string(ev, args, 0, scope, func)?.unwrap_or_default();
            let mut parts = Vec::with_capacity(input.len());
            for item in &input {
                match value_of(item) {
                    Some(Value::String(s)) => parts.push(s),
                    Some(v) => parts.push(to_fhirpath_string(&v)),
                    None => return Err(Error::eval(format!("{} expects strings", func.call()))),
                }
            }
            one(Value::String(parts.join(&sep)))
        }
        Encode | Decode | Escape | Unescape => {
            let (Some(s), Some(fmt)) = (input_string(&input, func)?, arg_string(ev, args, 0, scope, func)?) else {
                return Ok(Vec::new());
            };
            match crate::strings::transcode(func, &s, &fmt) {
                Some(out) => one(Value::String(out)),
                None => Vec::new(),
            }
        }
        // ---- math ----
        Abs | Ceiling | Floor | Truncate | Exp | Ln | Sqrt => {
            let Some(v) = singleton(&input, func.call())? else { return Ok(Vec::new()) };
            math1(func, &v)?.map(one).unwrap_or_default()
        }
        Log | Power => {
            let Some(v) = singleton(&input, func.call())? else { return Ok(Vec::new()) };
            let Some(arg) = ev.arg(args, 0, scope)? else { return Ok(Vec::new()) };
            let Some(a) = singleton(&arg, func.call())? else { return Ok(Vec::new()) };
            math2(func, &v, &a)?.map(one).unwrap_or_default()
        }
        Round => {
            let Some(v) = singleton(&input, func.call())? else { return Ok(Vec::new()) };
            let digits = arg_integer(ev, args, 0, scope, func)?.unwrap_or(0);
            if digits < 0 {
                return Err(Error::eval(format!("{} precision must not be negative", func.call())));
            }
            let d = number_of(&v).ok_or_else(|| Error::eval(format!("{} expects a number", func.call())))?;
            one(Value::Decimal(d.round_dp_with_strategy(digits as u32, RoundingStrategy::MidpointAwayFromZero)))
        }
        Sort => sort(ev, input, args)?,
        Comparable => {
            let other = ev.arg(args, 0, scope)?.unwrap_or_default();
            match (singleton(&input, func.call())?, singleton(&other, func.call())?) {
                (Some(Value::Quantity(_, a)), Some(Value::Quantity(_, b))) => {
                    boolean(crate::value::convert_quantity(Decimal::ONE, &a, &b).is_some())
                }
                (None, _) | (_, None) => Vec::new(),
                _ => return Err(Error::eval(format!("{} expects quantities", func.call()))),
            }
        }
        // ---- tree navigation ----
        Children => {
            let mut out = Vec::new();
            for item in &input {
                if let Item::Node(n) = item {
                    children(n, &mut out);
                }
            }
            out
        }
        Descendants => {
            let mut out = Vec::new();
            for item in &input {
                if let Item::Node(n) = item {
                    walk(n, &mut out, &mut |_| (true, true));
                }
            }
            out
        }
        // ---- utility ----
        Trace => input,
        Now => one(Value::Temporal(ev.now())),
        Today => one(Value::Temporal(ev.now().to_date())),
        TimeOfDay => {
            let mut t = ev.now();
            t.kind = TemporalKind::Time;
            t.tz = None;
            one(Value::Temporal(t))
        }
        // ---- types ----
        Is => match input.as_slice() {
            [] => Vec::new(),
            [item] => boolean(is_type(item, type_arg(args).expect("compiled as type"))),
            _ => return Err(Error::eval(format!("{} expects a single item", func.call()))),
        },
        As => {
            if input.len() > 1 {
                return Err(Error::eval(format!("{} expects a single item", func.call())));
            }
            let ty = type_arg(args).expect("compiled as type");
            input.into_iter().filter(|i| as_type(i, ty)).collect()
        }
        Type => input
            .iter()
            .map(|item| {
                let (namespace, name) = reflect_type(item);
                Item::Value(Value::TypeInfo { namespace, name })
            })
            .collect(),
        Not => match to_bool(&input, func.call())? {
            Some(b) => boolean(!b),
            None => Vec::new(),
        },
        Aggregate => {
            let op = lambda_op(args, 0).expect("arity checked");
            let mut total = ev.arg(args, 1, scope)?.unwrap_or_default();
            for (i, item) in input.iter().enumerate() {
                total = ev.lambda(op, item, i, Some(&total))?;
            }
            total
        }
        // ---- FHIR ----
        Extension => {
            let Some(url) = arg_string(ev, args, 0, scope, func)? else { return Ok(Vec::new()) };
            let mut exts = Vec::new();
            for item in &input {
                if let Item::Node(n) = item {
                    child(n, "extension", false, &mut exts)?;
                }
            }
            exts.into_iter()
                .filter(|e| {
                    e.as_node().and_then(|n| n.json()).and_then(|j| j.get("url")).and_then(Json::as_str)
                        == Some(url.as_str())
                })
                .collect()
        }
        HasValue => boolean(
            matches!(input.as_slice(), [Item::Node(n)] if n.value.is_some_and(|v| !v.is_object() && !v.is_array())),
        ),
        GetValue => match input.as_slice() {
            [item @ Item::Node(n)] if n.value.is_some_and(|v| !v.is_object()) => {
                value_of(item).map(one).unwrap_or_default()
            }
            _ => Vec::new(),
        },
        Resolve => input.iter().filter_map(|item| resolve(ev, item)).collect(),
        LowBoundary | HighBoundary => {
            let Some(v) = singleton(&input, func.call())? else { return Ok(Vec::new()) };
            let digits = arg_integer(ev, args, 0, scope, func)?;
            boundary(&v, func == HighBoundary, digits).map(one).unwrap_or_default()
        }
        Precision => match singleton(&input, func.call())? {
            Some(Value::Decimal(d)) => one(Value::Integer(d.scale() as i64)),
            Some(Value::Integer(_)) => one(Value::Integer(0)),
            Some(Value::Temporal(t)) => one(Value::Integer(temporal_digits(&t))),
            _ => Vec::new(),
        },
        NodesByType | NodesByName => {
            let Some(wanted) = arg_string(ev, args, 0, scope, func)? else { return Ok(Vec::new()) };
            let mut out = Vec::new();
            for item in &input {
                if let Item::Node(n) = item {
                    nodes_by(n, &wanted, func == NodesByType, &mut out);
                }
            }
            out
        }
        GetResourceKey => input
            .iter()
            .filter_map(|item| item.as_node().filter(|n| n.is_resource()))
            .filter_map(|n| n.json()?.get("id")?.as_str().map(|id| Item::Value(Value::String(id.to_string()))))
            .collect(),
        GetReferenceKey => {
            let wanted = type_arg(args);
            input.iter().filter_map(|item| reference_key(item, wanted)).map(|k| Item::Value(Value::String(k))).collect()
        }
    })
}

/// The Microsoft anonymizer's `nodesByType` / `nodesByName`: the focus and
/// its descendants of that exact type (or with that element name), without
/// entering nested resources and without returning them.
fn nodes_by<'a>(node: &Node<'a>, wanted: &str, by_type: bool, out: &mut Coll<'a>) {
    let matches = |n: &Node<'a>| if by_type { n.ty.name == wanted } else { n.name == wanted };
    if matches(node) {
        out.push(Item::Node(node.clone()));
    }
    walk(node, out, &mut |n| {
        let nested_resource = n.is_resource();
        (!nested_resource && matches(n), !nested_resource)
    });
}

/// Walks a node's descendants depth-first in document order, with an
/// explicit stack (deep trees cannot exhaust the call stack). `visit` says
/// whether to keep a node and whether to descend into it.
pub(crate) fn walk<'a>(root: &Node<'a>, out: &mut Coll<'a>, visit: &mut dyn FnMut(&Node<'a>) -> (bool, bool)) {
    let mut stack: Vec<Item<'a>> = Vec::new();
    let mut buf = Vec::new();
    children(root, &mut buf);
    stack.extend(buf.drain(..).rev());
    while let Some(item) = stack.pop() {
        let Item::Node(n) = &item else { continue };
        let (keep, descend) = visit(n);
        if descend {
            children(n, &mut buf);
            stack.extend(buf.drain(..).rev());
        }
        if keep {
            out.push(item);
        }
    }
}

/// FHIRPath 2.1 `sort([key, …])`: keys are lambdas, `-key` sorts that key descending.
fn sort<'a>(ev: &Evaluator<'_, 'a>, input: Coll<'a>, args: &[CArg]) -> Result<Coll<'a>> {
    use crate::compile::Op;
    let keys: Vec<(&Op, bool)> = args
        .iter()
        .filter_map(|a| match a {
            CArg::Lambda(Op::Neg(inner)) => Some((&**inner, true)),
            CArg::Lambda(op) => Some((op, false)),
            _ => None,
        })
        .collect();
    let mut keyed = Vec::with_capacity(input.len());
    for (i, item) in input.into_iter().enumerate() {
        let mut k = Vec::with_capacity(keys.len().max(1));
        if keys.is_empty() {
            k.push(value_of(&item));
        }
        for (op, _) in &keys {
            k.push(singleton(&ev.lambda(op, &item, i, None)?, Func::Sort.call())?);
        }
        keyed.push((k, item));
    }
    let mut failure = None;
    keyed.sort_by(|(a, _), (b, _)| {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let desc = keys.get(i).is_some_and(|k| k.1);
            let o = match (x, y) {
                (None, None) => std::cmp::Ordering::Equal,
                // Items without a key sort last (first when descending), as the HL7 suite has it.
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => match crate::ops::compare_values(x, y) {
                    Ok(o) => o.unwrap_or(std::cmp::Ordering::Equal),
                    Err(e) => {
                        failure.get_or_insert(e);
                        std::cmp::Ordering::Equal
                    }
                },
            };
            let o = if desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(keyed.into_iter().map(|(_, item)| item).collect()),
    }
}

/// `toX()` (`test` false) or `convertsToX()` (`test` true) through `f`.
fn convert<'a>(func: Func, test: bool, input: &Coll<'a>, f: impl Fn(&Value) -> Option<Value>) -> Result<Coll<'a>> {
    let Some(v) = singleton(input, func.call())? else { return Ok(Vec::new()) };
    let r = f(&v);
    Ok(if test { boolean(r.is_some()) } else { r.map(one).unwrap_or_default() })
}

fn to_boolean(v: &Value) -> Option<Value> {
    let b = match v {
        Value::Boolean(b) => *b,
        Value::Integer(1) => true,
        Value::Integer(0) => false,
        Value::Decimal(d) if *d == Decimal::ONE => true,
        Value::Decimal(d) if d.is_zero() => false,
        Value::String(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => true,
            "false" | "f" | "no" | "n" | "0" | "0.0" => false,
            _ => return None,
        },
        _ => return None,
    };
    Some(Value::Boolean(b))
}

fn to_integer(v: &Value) -> Option<Value> {
    match v {
        Value::Integer(_) => Some(v.clone()),
        Value::Boolean(b) => Some(Value::Integer(*b as i64)),
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok().map(Value::Integer)
        }
        _ => None,
    }
}

fn to_decimal(v: &Value) -> Option<Value> {
    match v {
        Value::Decimal(_) => Some(v.clone()),
        Value::Integer(i) => Some(Value::Decimal(Decimal::from(*i))),
        Value::Boolean(b) => Some(Value::Decimal(if *b { Decimal::ONE } else { Decimal::ZERO })),
        Value::String(s) => {
            let body = s.strip_prefix(['+', '-']).unwrap_or(s);
            let ok = !body.is_empty()
                && body.split_once('.').map_or(body.bytes().all(|b| b.is_ascii_digit()), |(i, f)| {
                    !i.is_empty()
                        && !f.is_empty()
                        && i.bytes().all(|b| b.is_ascii_digit())
                        && f.bytes().all(|b| b.is_ascii_digit())
                });
            if !ok {
                return None;
            }
            parse_decimal(s).map(Value::Decimal)
        }
        _ => None,
    }
}

fn to_quantity(v: &Value) -> Option<Value> {
    match v {
        Value::Quantity(..) => Some(v.clone()),
        Value::Integer(i) => Some(Value::Quantity(Decimal::from(*i), "1".into())),
        Value::Decimal(d) => Some(Value::Quantity(*d, "1".into())),
        Value::Boolean(b) => Some(Value::Quantity(if *b { Decimal::ONE } else { Decimal::ZERO }, "1".into())),
        Value::String(s) => {
            let s = s.trim();
            let (num, rest) = s.split_at(s.find([' ', '\'']).unwrap_or(s.len()));
            let Some(Value::Decimal(d)) = to_decimal(&Value::String(num.to_string())) else { return None };
            let rest = rest.trim();
            if rest.is_empty() {
                return Some(Value::Quantity(d, "1".into()));
            }
            if let Some(unit) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
                return Some(Value::Quantity(d, unit.to_string()));
            }
            crate::temporal::CalendarUnit::parse(rest)
                .filter(|_| rest.chars().all(|c| c.is_ascii_alphabetic()) && rest.len() > 2)
                .map(|_| Value::Quantity(d, rest.to_string()))
        }
        _ => None,
    }
}

fn insert_between(s: &str, r: &str) -> String {
    let mut out = String::from(r);
    for c in s.chars() {
        out.push(c);
        out.push_str(r);
    }
    out
}

/// Compiles a regex once per thread and pattern. FHIRPath regexes match
/// anywhere in the string and `.` matches newlines (N1 §matches).
fn regex(pattern: &str) -> Result<regex::Regex> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
    }
    if let Some(re) = CACHE.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pattern)
        .dot_matches_new_line(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| Error::eval("invalid regular expression"))?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 256 {
            c.clear();
        }
        c.insert(pattern.to_string(), re.clone());
    });
    Ok(re)
}

fn math1(func: Func, v: &Value) -> Result<Option<Value>> {
    use Func::*;
    if let (Abs, Value::Quantity(d, u)) = (func, v) {
        return Ok(Some(Value::Quantity(d.abs(), u.clone())));
    }
    let Some(d) = number_of(v) else {
        return Err(Error::eval(format!("{} expects a number, found {}", func.call(), v.type_name())));
    };
    let int = |d: Decimal| d.to_i64().map(Value::Integer);
    Ok(match func {
        Abs => Some(match v {
            Value::Integer(i) => {
                Value::Integer(i.checked_abs().ok_or_else(|| Error::eval(format!("{} overflow", func.call())))?)
            }
            _ => Value::Decimal(d.abs()),
        }),
        Ceiling => int(d.ceil()),
        Floor => int(d.floor()),
        Truncate => int(d.trunc()),
        Exp => d.to_f64().map(f64::exp).and_then(Decimal::from_f64).map(Value::Decimal),
        Ln => (d > Decimal::ZERO)
            .then(|| d.to_f64().map(f64::ln).and_then(Decimal::from_f64))
            .flatten()
            .map(Value::Decimal),
        Sqrt => (d >= Decimal::ZERO)
            .then(|| d.to_f64().map(f64::sqrt).and_then(Decimal::from_f64))
            .flatten()
            .map(Value::Decimal),
        _ => None,
    })
}

fn math2(func: Func, v: &Value, a: &Value) -> Result<Option<Value>> {
    let (Some(x), Some(y)) = (number_of(v), number_of(a)) else {
        return Err(Error::eval(format!("{} expects numbers", func.call())));
    };
    Ok(match func {
        Func::Log => {
            let (x, y) = (x.to_f64().unwrap_or(f64::NAN), y.to_f64().unwrap_or(f64::NAN));
            Decimal::from_f64(x.ln() / y.ln()).map(Value::Decimal)
        }
        _ => match (v, a) {
            (Value::Integer(b), Value::Integer(e)) if *e >= 0 => {
                u32::try_from(*e).ok().and_then(|e| b.checked_pow(e)).map(Value::Integer)
            }
            _ => {
                let r = x.to_f64().unwrap_or(f64::NAN).powf(y.to_f64().unwrap_or(f64::NAN));
                if r.is_finite() { Decimal::from_f64(r).map(Value::Decimal) } else { None }
            }
        },
    })
}

/// Resolves a Reference within the evaluated resources: `#id` to a contained
/// resource of `%resource`, otherwise a Bundle entry of `%rootResource` by
/// `fullUrl` or `Type/id`. No server is asked.
fn resolve<'a>(ev: &Evaluator<'_, 'a>, item: &Item<'a>) -> Option<Item<'a>> {
    let reference = match item {
        Item::Node(n) => match n.json()? {
            Json::String(s) => s.as_str(),
            Json::Object(o) => o.get("reference")?.as_str()?,
            _ => return None,
        },
        Item::Value(Value::String(_)) | Item::Value(_) => return None,
    };
    let find = |holder: &Item<'a>, field: &str, pred: &dyn Fn(&Item<'a>) -> bool| -> Option<Item<'a>> {
        let mut out = Vec::new();
        child(holder.as_node()?, field, false, &mut out).ok()?;
        out.into_iter().find(|i| pred(i))
    };
    if let Some(id) = reference.strip_prefix('#') {
        return find(&ev.ctx.resource, "contained", &|c| {
            c.as_node().and_then(|n| n.json()?.get("id")?.as_str()) == Some(id)
        });
    }
    let entry = find(&ev.ctx.root_resource, "entry", &|e| {
        let Some(j) = e.as_node().and_then(|n| n.json()) else { return false };
        if j.get("fullUrl").and_then(Json::as_str) == Some(reference) {
            return true;
        }
        let Some(r) = j.get("resource") else { return false };
        match (r.get("resourceType").and_then(Json::as_str), r.get("id").and_then(Json::as_str)) {
            (Some(t), Some(id)) => {
                reference.len() == t.len() + 1 + id.len()
                    && reference.starts_with(t)
                    && reference.ends_with(id)
                    && reference.as_bytes()[t.len()] == b'/'
            }
            _ => false,
        }
    })?;
    find(&entry, "resource", &|_| true)
}

/// SQL on FHIR `getReferenceKey([Type])`: the id part of a reference
/// (`Patient/123` → `123`, `urn:uuid:abc` → `abc`), empty when the reference
/// names another type than the one asked for.
fn reference_key(item: &Item<'_>, wanted: Option<&TypeSpec>) -> Option<String> {
    let node = item.as_node()?;
    let reference = node.json()?.get("reference")?.as_str()?;
    let reference = reference.split("/_history/").next().unwrap_or(reference);
    if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
        return Some(uuid.to_string());
    }
    let mut parts = reference.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next();
    match (wanted, ty) {
        (Some(TypeSpec::Fhir(t)), Some(ty)) if *t != ty => None,
        (Some(_), None) => None,
        _ => Some(id.to_string()),
    }
}

fn temporal_digits(t: &Temporal) -> i64 {
    let date = match t.precision {
        Precision::Year => 4,
        Precision::Month => 6,
        Precision::Day => 8,
        Precision::Hour => 10,
        Precision::Minute => 12,
        Precision::Second => 14,
        Precision::Fraction => 14 + t.frac_digits as i64,
    };
    if t.kind == TemporalKind::Time { date - 8 } else { date }
}

/// FHIRPath 2.1 `lowBoundary` / `highBoundary`: the least and greatest
/// values a decimal or temporal could stand for given how it was written.
fn boundary(v: &Value, high: bool, digits: Option<i64>) -> Option<Value> {
    match v {
        Value::Decimal(_) | Value::Integer(_) => {
            let d = number_of(v)?;
            let digits = digits.unwrap_or(8);
            if !(0..=28).contains(&digits) {
                return None;
            }
            // The value stands for everything that rounds to it: ± half a
            // unit of its last written digit, then written at `digits`.
            let half = Decimal::new(5, d.scale() + 1);
            let b = if high { d + half } else { d - half };
            let strategy =
                if high { RoundingStrategy::ToPositiveInfinity } else { RoundingStrategy::ToNegativeInfinity };
            let mut r = b.round_dp_with_strategy(digits as u32, strategy);
            r.rescale(digits as u32);
            Some(Value::Decimal(r))
        }
        Value::Quantity(d, u) => match boundary(&Value::Decimal(*d), high, digits)? {
            Value::Decimal(b) => Some(Value::Quantity(b, u.clone())),
            _ => None,
        },
        Value::Temporal(t) => {
            let digits = match digits {
                None => None,
                Some(d) => Some(u32::try_from(d).ok()?),
            };
            t.boundary(high, digits).map(Value::Temporal)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::Func;

    /// Whether `message` names `call` (`lower()`) as a whole word, so that
    /// `lower()` is not found inside `toLower()`.
    fn names(message: &str, call: &str) -> bool {
        message.match_indices(call).any(|(i, _)| !message[..i].ends_with(|c: char| c.is_ascii_alphanumeric()))
    }

    /// Every function is called with inputs and arguments of every wrong
    /// shape; each error that names a function must name the one called.
    #[test]
    fn every_function_error_names_its_own_function() {
        let patient = serde_json::json!({"resourceType": "Patient", "name": [{"family": "F"}, {"family": "G"}]});
        let inputs = ["(1 | 2)", "name", "name.first()", "'s'", "1", "true", "@2020-01-01", "5 'mg'"];
        let args = ["", "1 | 2", "name", "'s'", "1", "true", "'s', 1 | 2", "1, 'a'", "'(', 's'", "'[', 's'"];
        let mut named_self = 0;
        for &func in Func::ALL {
            let name = func.call().trim_end_matches("()");
            for input in inputs {
                for arg in args {
                    let source = format!("{input}.{name}({arg})");
                    let Ok(expr) = crate::Expression::compile(&source) else { continue };
                    let Err(e) = expr.evaluate(&patient) else { continue };
                    let message = e.to_string();
                    for &other in Func::ALL {
                        if other != func && !func.call().ends_with(other.call()) {
                            assert!(!names(&message, other.call()), "{source}: '{message}' names {}", other.call());
                        }
                    }
                    if message.contains("()") {
                        assert!(names(&message, func.call()), "{source}: '{message}' does not name {}", func.call());
                        named_self += 1;
                    }
                }
            }
        }
        assert!(named_self > 100, "only {named_self} errors named their function: the provocations miss");
    }
}
