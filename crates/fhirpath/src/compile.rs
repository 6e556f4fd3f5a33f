//! Resolves the parsed tree once: function names to [`Func`] with their
//! arity checked, literals to values, type specifiers to types. Evaluation
//! never looks a name up in a string table.

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::error::{Error, ErrorKind, Result, Span};
use crate::eval::Item;
use crate::parse::{BinOp, Expr, TypeName};
use crate::temporal::Temporal;
use crate::value::{Value, parse_decimal};

/// A resolved type specifier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TypeSpec {
    /// A System type (`System.String`, or an unqualified `String`).
    System(&'static str),
    /// A FHIR type or resource type (`FHIR.Patient`, `HumanName`, `string`).
    Fhir(&'static str),
    /// A well-formed name in the System namespace that is no System type
    /// (`System.Patient`): nothing is of that type.
    None,
}

/// How an argument is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    /// Once, against the same `$this` as the call.
    Value,
    /// Per input item, with `$this` (and `$index`) bound to it.
    Lambda,
    /// A type specifier.
    Type,
}

macro_rules! functions {
    ($($name:literal => $f:ident($min:literal, [$($arg:ident),*]),)*) => {
        /// Every function Veil's FHIRPath knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $($f,)* }

        fn lookup(name: &str) -> Option<(Func, usize, &'static [Arg])> {
            match name {
                $($name => Some((Func::$f, $min, &[$(Arg::$arg),*])),)*
                _ => None,
            }
        }

        impl Func {
            /// Every function, in the table's order.
            #[cfg(test)]
            pub(crate) const ALL: &[Func] = &[$(Func::$f,)*];

            /// The call as error messages name it (`startsWith()`), from the
            /// same table, so that a message cannot name another function.
            pub(crate) fn call(self) -> &'static str {
                match self { $(Func::$f => concat!($name, "()"),)* }
            }
        }
    };
}

functions! {
    // Existence (N1 §5.1)
    "empty" => Empty(0, []),
    "exists" => Exists(0, [Lambda]),
    "all" => All(1, [Lambda]),
    "allTrue" => AllTrue(0, []),
    "anyTrue" => AnyTrue(0, []),
    "allFalse" => AllFalse(0, []),
    "anyFalse" => AnyFalse(0, []),
    "subsetOf" => SubsetOf(1, [Value]),
    "supersetOf" => SupersetOf(1, [Value]),
    "count" => Count(0, []),
    "distinct" => Distinct(0, []),
    "isDistinct" => IsDistinct(0, []),
    // Filtering and projection (§5.2)
    "where" => Where(1, [Lambda]),
    "select" => Select(1, [Lambda]),
    "repeat" => Repeat(1, [Lambda]),
    "ofType" => OfType(1, [Type]),
    // Subsetting (§5.3)
    "single" => Single(0, []),
    "first" => First(0, []),
    "last" => Last(0, []),
    "tail" => Tail(0, []),
    "skip" => Skip(1, [Value]),
    "take" => Take(1, [Value]),
    "intersect" => Intersect(1, [Value]),
    "exclude" => Exclude(1, [Value]),
    // Combining (§5.4)
    "union" => Union(1, [Value]),
    "combine" => Combine(1, [Value]),
    // Conversion (§5.5)
    "iif" => Iif(2, [Lambda, Lambda, Lambda]),
    "toBoolean" => ToBoolean(0, []),
    "convertsToBoolean" => ConvertsToBoolean(0, []),
    "toInteger" => ToInteger(0, []),
    "convertsToInteger" => ConvertsToInteger(0, []),
    "toDecimal" => ToDecimal(0, []),
    "convertsToDecimal" => ConvertsToDecimal(0, []),
    "toString" => ToString(0, []),
    "convertsToString" => ConvertsToString(0, []),
    "toDate" => ToDate(0, []),
    "convertsToDate" => ConvertsToDate(0, []),
    "toDateTime" => ToDateTime(0, []),
    "convertsToDateTime" => ConvertsToDateTime(0, []),
    "toTime" => ToTime(0, []),
    "convertsToTime" => ConvertsToTime(0, []),
    "toQuantity" => ToQuantity(0, [Value]),
    "convertsToQuantity" => ConvertsToQuantity(0, [Value]),
    // Strings (§5.6)
    "indexOf" => IndexOf(1, [Value]),
    "substring" => Substring(1, [Value, Value]),
    "startsWith" => StartsWith(1, [Value]),
    "endsWith" => EndsWith(1, [Value]),
    "contains" => Contains(1, [Value]),
    "upper" => Upper(0, []),
    "lower" => Lower(0, []),
    "replace" => Replace(2, [Value, Value]),
    "matches" => Matches(1, [Value]),
    "matchesFull" => MatchesFull(1, [Value]),
    "replaceMatches" => ReplaceMatches(2, [Value, Value]),
    "length" => Length(0, []),
    "toChars" => ToChars(0, []),
    "trim" => Trim(0, []),
    "split" => Split(1, [Value]),
    "join" => Join(0, [Value]),
    "encode" => Encode(1, [Value]),
    "decode" => Decode(1, [Value]),
    "escape" => Escape(1, [Value]),
    "unescape" => Unescape(1, [Value]),
    // Math (§5.7)
    "abs" => Abs(0, []),
    "ceiling" => Ceiling(0, []),
    "exp" => Exp(0, []),
    "floor" => Floor(0, []),
    "ln" => Ln(0, []),
    "log" => Log(1, [Value]),
    "power" => Power(1, [Value]),
    "round" => Round(0, [Value]),
    "sqrt" => Sqrt(0, []),
    "truncate" => Truncate(0, []),
    // Tree navigation (§5.8)
    "children" => Children(0, []),
    "descendants" => Descendants(0, []),
    // Utility (§5.9)
    "trace" => Trace(1, [Value, Lambda]),
    "now" => Now(0, []),
    "timeOfDay" => TimeOfDay(0, []),
    "today" => Today(0, []),
    // Types (§6.3) and boolean logic
    "is" => Is(1, [Type]),
    "as" => As(1, [Type]),
    "type" => Type(0, []),
    "not" => Not(0, []),
    // Aggregates (§7)
    "aggregate" => Aggregate(1, [Lambda, Value]),
    // FHIR-specific (FHIR R4 §2.1.9.1.7)
    "extension" => Extension(1, [Value]),
    "hasValue" => HasValue(0, []),
    "getValue" => GetValue(0, []),
    "resolve" => Resolve(0, []),
    // FHIRPath 2.1 (STU) boundaries, used by SQL on FHIR
    "lowBoundary" => LowBoundary(0, [Value]),
    "highBoundary" => HighBoundary(0, [Value]),
    "sort" => Sort(0, [Lambda, Lambda, Lambda, Lambda]),
    "comparable" => Comparable(1, [Value]),
    "precision" => Precision(0, []),
    // The Microsoft anonymizer's extensions
    "nodesByType" => NodesByType(1, [Value]),
    "nodesByName" => NodesByName(1, [Value]),
    // SQL on FHIR v2
    "getResourceKey" => GetResourceKey(0, []),
    "getReferenceKey" => GetReferenceKey(0, [Type]),
}

/// The compiled expression tree.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Empty,
    Lit(Value),
    /// A collection of literals, folded when compiled (`'a' | 'b' | 'c'`,
    /// the value sets of `in` in views): built once instead of by a union
    /// per evaluation, whose de-duplication is quadratic.
    Lits(Vec<Value>),
    /// A name: a child element, or a type name filtering the focus.
    Ident(String, Option<TypeSpec>),
    This,
    Index,
    Total,
    External(String),
    Member(Box<Op>, String, Option<TypeSpec>),
    /// A call; `None` as target means the current `$this`.
    Call(Option<Box<Op>>, Func, Vec<CArg>),
    Indexer(Box<Op>, Box<Op>),
    Neg(Box<Op>),
    Binary(BinOp, Box<Op>, Box<Op>),
    Is(Box<Op>, TypeSpec),
    As(Box<Op>, TypeSpec),
}

#[derive(Debug, Clone)]
pub(crate) enum CArg {
    Value(Op),
    Lambda(Op),
    Type(TypeSpec),
}

pub(crate) fn compile(src: &str, e: &Expr) -> Result<Op> {
    Ok(match e {
        Expr::Empty => Op::Empty,
        Expr::Bool(b) => Op::Lit(Value::Boolean(*b)),
        Expr::Str(s) => Op::Lit(Value::String(s.clone())),
        Expr::Num(n) => Op::Lit(number(n)?),
        Expr::DateTime(d) => Op::Lit(
            temporal_literal(d)
                .ok_or_else(|| Error::new(ErrorKind::Syntax, format!("invalid date/time literal @{d}")))?,
        ),
        Expr::Quantity { value, unit } => {
            let v = parse_decimal(value).ok_or_else(|| Error::new(ErrorKind::Syntax, "number out of range"))?;
            Op::Lit(Value::Quantity(v, unit.clone()))
        }
        Expr::Ident(name, _) => Op::Ident(name.clone(), type_filter(name)),
        Expr::This => Op::This,
        Expr::Index => Op::Index,
        Expr::Total => Op::Total,
        Expr::External(name, _) => Op::External(name.clone()),
        Expr::Member(target, name, _) => Op::Member(Box::new(compile(src, target)?), name.clone(), type_filter(name)),
        Expr::Call { target, name, args, span } => {
            let Some((func, min, kinds)) = lookup(name) else {
                return Err(Error::at(ErrorKind::Semantic, src, *span, &format!("unknown function '{name}'")));
            };
            if args.len() < min || args.len() > kinds.len() {
                let expected = if min == kinds.len() { format!("{min}") } else { format!("{min} to {}", kinds.len()) };
                return Err(Error::at(
                    ErrorKind::Semantic,
                    src,
                    *span,
                    &format!("{name}() takes {expected} argument(s), found {}", args.len()),
                ));
            }
            let cargs = args
                .iter()
                .zip(kinds)
                .map(|(a, k)| {
                    Ok(match k {
                        Arg::Value => CArg::Value(compile(src, a)?),
                        Arg::Lambda => CArg::Lambda(compile(src, a)?),
                        Arg::Type => CArg::Type(type_arg(src, a, *span)?),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let target = target.as_ref().map(|t| compile(src, t)).transpose()?.map(Box::new);
            Op::Call(target, func, cargs)
        }
        Expr::Indexer(t, i) => Op::Indexer(Box::new(compile(src, t)?), Box::new(compile(src, i)?)),
        Expr::Neg(inner) => match compile(src, inner)? {
            // Fold literal negation so `-5` is a literal and `-9223372036854775808` fits.
            Op::Lit(Value::Integer(i)) => Op::Lit(Value::Integer(-i)),
            Op::Lit(Value::Decimal(d)) => Op::Lit(Value::Decimal(-d)),
            Op::Lit(Value::Quantity(d, u)) => Op::Lit(Value::Quantity(-d, u)),
            other => Op::Neg(Box::new(other)),
        },
        Expr::Binary(op, l, r) => match (op, compile(src, l)?, compile(src, r)?) {
            (BinOp::Union, l @ (Op::Lit(_) | Op::Lits(_)), r @ (Op::Lit(_) | Op::Lits(_))) => {
                let items = |op: Op| match op {
                    Op::Lit(v) => vec![Item::Value(v)],
                    Op::Lits(vs) => vs.into_iter().map(Item::Value).collect(),
                    _ => unreachable!("matched above"),
                };
                let folded = crate::eval::union(items(l), items(r));
                Op::Lits(
                    folded.into_iter().filter_map(|i| if let Item::Value(v) = i { Some(v) } else { None }).collect(),
                )
            }
            (op, l, r) => Op::Binary(*op, Box::new(l), Box::new(r)),
        },
        Expr::Is(inner, ty, span) => Op::Is(Box::new(compile(src, inner)?), resolve_type(src, ty, *span)?),
        Expr::As(inner, ty, span) => Op::As(Box::new(compile(src, inner)?), resolve_type(src, ty, *span)?),
    })
}

fn number(n: &str) -> Result<Value> {
    if n.contains('.') {
        Decimal::from_str_exact(n)
            .map(Value::Decimal)
            .map_err(|_| Error::new(ErrorKind::Syntax, "decimal out of range"))
    } else {
        match n.parse::<i64>() {
            Ok(i) => Ok(Value::Integer(i)),
            Err(_) => Decimal::from_str(n)
                .map(Value::Decimal)
                .map_err(|_| Error::new(ErrorKind::Syntax, "number out of range")),
        }
    }
}

fn temporal_literal(d: &str) -> Option<Value> {
    let t = if let Some(time) = d.strip_prefix('T') {
        Temporal::parse_time(time)?
    } else if d.contains('T') {
        Temporal::parse_datetime(d)?
    } else {
        Temporal::parse_date(d)?
    };
    Some(Value::Temporal(t))
}

/// A capitalised name that is a type acts as a type filter on the focus
/// (FHIRPath N1 §Path selection: `Patient.name` on a Patient).
fn type_filter(name: &str) -> Option<TypeSpec> {
    if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    veil_fhir::r4().type_name(name).map(TypeSpec::Fhir)
}

fn type_arg(src: &str, e: &Expr, span: Span) -> Result<TypeSpec> {
    let ty = match e {
        Expr::Ident(name, _) => TypeName { namespace: None, name: name.clone() },
        Expr::Member(ns, name, _) => match &**ns {
            Expr::Ident(ns, _) => TypeName { namespace: Some(ns.clone()), name: name.clone() },
            _ => return Err(Error::at(ErrorKind::Semantic, src, span, "expected a type name")),
        },
        _ => return Err(Error::at(ErrorKind::Semantic, src, span, "expected a type name")),
    };
    resolve_type(src, &ty, span)
}

const SYSTEM_TYPES: [&str; 9] =
    ["Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity", "Any"];

fn resolve_type(src: &str, ty: &TypeName, span: Span) -> Result<TypeSpec> {
    let model = veil_fhir::r4();
    let system = || SYSTEM_TYPES.iter().find(|t| **t == ty.name).map(|t| TypeSpec::System(t));
    let fhir = || model.type_name(&ty.name).map(TypeSpec::Fhir);
    let found = match ty.namespace.as_deref() {
        Some("System") => system(),
        Some("FHIR") => fhir(),
        // FHIR types first: `Quantity` in a FHIR context is FHIR.Quantity.
        None => fhir().or_else(system),
        Some(_) => None,
    };
    match found {
        Some(t) => Ok(t),
        None if ty.namespace.as_deref() == Some("System") => Ok(TypeSpec::None),
        None => Err(Error::at(ErrorKind::Semantic, src, span, &format!("unknown type '{}'", ty.name))),
    }
}
