//! Static checks against the R4 model, for strict mode: paths that name no
//! element of their focus's possible types (`(Observation.value as
//! Period).unit`), and order-dependent functions applied to collections whose
//! order FHIRPath does not define (`children().skip(1)`). Types that cannot
//! be inferred are unknown and pass.

use veil_fhir::r4;

use crate::compile::{CArg, Func, Op, TypeSpec};
use crate::error::{Error, ErrorKind, Result};
use crate::parse::BinOp;

/// What is known statically about a collection.
#[derive(Clone, Debug)]
struct Shape {
    /// The FHIR types its items may have; `None` when unknown.
    types: Option<Vec<&'static str>>,
    /// Whether its order is defined.
    ordered: bool,
}

impl Shape {
    fn unknown() -> Shape {
        Shape { types: None, ordered: true }
    }
    fn of(types: Vec<&'static str>) -> Shape {
        Shape { types: Some(types), ordered: true }
    }
}

pub(crate) fn check(op: &Op, root_type: &'static str) -> Result<()> {
    let root = Shape::of(vec![root_type]);
    shape(op, &root).map(|_| ())
}

fn navigate(input: &Shape, name: &str) -> Result<Shape> {
    let Some(types) = &input.types else { return Ok(Shape::unknown()) };
    let mut out = Vec::new();
    for t in types {
        // Children of a type or of a backbone path.
        match r4().child(t, name) {
            Some(el) => {
                for ty in el.types {
                    let owner = el.children_owner(ty);
                    out.push(if owner == *ty { *ty } else { owner });
                }
            }
            None if *t == "Resource" || *t == "DomainResource" => return Ok(Shape::unknown()),
            None => {}
        }
    }
    if out.is_empty() {
        return Err(Error::new(ErrorKind::Semantic, format!("no element '{name}' on {}", types.join(" or "))));
    }
    Ok(Shape { types: Some(out), ordered: input.ordered })
}

fn shape(op: &Op, this: &Shape) -> Result<Shape> {
    Ok(match op {
        Op::Ident(name, Some(TypeSpec::Fhir(t))) => {
            // A type name filters the focus.
            match &this.types {
                Some(types) if types.iter().any(|x| r4().is_subtype(x, t)) => Shape::of(vec![t]),
                Some(types) if types.iter().all(|x| r4().is_resource_type(x)) => {
                    return Err(Error::new(
                        ErrorKind::Semantic,
                        format!("the expression starts with {name} but the context is {}", types.join(" or ")),
                    ));
                }
                _ => Shape::unknown(),
            }
        }
        Op::Ident(name, _) => navigate(this, name)?,
        Op::Member(target, name, _) => {
            let t = shape(target, this)?;
            navigate(&t, name)?
        }
        Op::This => this.clone(),
        Op::As(inner, ty) => {
            shape(inner, this)?;
            typed(ty)
        }
        Op::Call(target, func, args) => {
            let input = match target {
                Some(t) => shape(t, this)?,
                None => this.clone(),
            };
            let item = Shape { types: input.types.clone(), ordered: true };
            for a in args {
                if let CArg::Lambda(l) | CArg::Value(l) = a {
                    // Lambdas see one input item; value arguments the call's `$this`.
                    let scope = if matches!(a, CArg::Lambda(_)) { &item } else { this };
                    shape(l, scope)?;
                }
            }
            match func {
                Func::Skip | Func::Take | Func::First | Func::Last | Func::Tail if !input.ordered => {
                    return Err(Error::new(
                        ErrorKind::Semantic,
                        "this function depends on order, but the collection's order is not defined",
                    ));
                }
                Func::Where
                | Func::First
                | Func::Last
                | Func::Tail
                | Func::Skip
                | Func::Take
                | Func::Single
                | Func::Distinct
                | Func::Trace
                | Func::Exclude
                | Func::Intersect => input,
                Func::OfType | Func::As => match args.first() {
                    Some(CArg::Type(t)) => typed(t),
                    _ => Shape::unknown(),
                },
                Func::Select => match args.first() {
                    Some(CArg::Lambda(l)) => shape(l, &item)?,
                    _ => Shape::unknown(),
                },
                Func::Children | Func::Descendants => Shape { types: None, ordered: false },
                _ => Shape::unknown(),
            }
        }
        Op::Indexer(t, i) => {
            shape(i, this)?;
            shape(t, this)?
        }
        Op::Neg(x) | Op::Is(x, _) => {
            shape(x, this)?;
            Shape::unknown()
        }
        Op::Binary(op, l, r) => {
            let (a, b) = (shape(l, this)?, shape(r, this)?);
            match (op, a.types, b.types) {
                (BinOp::Union, Some(mut x), Some(y)) => {
                    x.extend(y);
                    Shape::of(x)
                }
                _ => Shape::unknown(),
            }
        }
        _ => Shape::unknown(),
    })
}

fn typed(ty: &TypeSpec) -> Shape {
    match ty {
        TypeSpec::Fhir(t) => Shape::of(vec![t]),
        _ => Shape::unknown(),
    }
}
