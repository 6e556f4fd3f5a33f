//! The evaluator: walks the compiled tree over a resource, producing items
//! that are either tree nodes (with their location) or computed values.

use std::collections::HashMap;

use serde_json::Value as Json;
use veil_fhir::r4;

use crate::compile::{CArg, Func, Op, TypeSpec};
use crate::error::{Error, ErrorKind, Result};
use crate::node::{FhirType, LocRef, Node, Step, push};
use crate::ops::{self, value_of};
use crate::parse::BinOp;
use crate::temporal::Temporal;
use crate::value::{Value, system_type_of};

/// One item of a FHIRPath result: a node of the resource tree (with its
/// location, so it can be edited) or a value the expression computed.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// A node of the evaluated resource.
    Node(Node<'a>),
    /// A computed value: it has no location and cannot be edited.
    Value(Value),
}

impl<'a> Item<'a> {
    /// The resource itself, as the root node that locations start from.
    pub fn root(resource: &'a Json) -> Item<'a> {
        Item::Node(Node::root(resource))
    }

    /// The node, if this item is one.
    pub fn as_node(&self) -> Option<&Node<'a>> {
        match self {
            Item::Node(n) => Some(n),
            Item::Value(_) => None,
        }
    }

    /// The type name: the FHIR type of a node (`HumanName`, `date`), or the
    /// System type of a computed value (`Boolean`, `Integer`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Item::Node(n) if !n.ty.name.is_empty() => n.ty.name,
            Item::Node(n) => match n.value {
                Some(Json::Bool(_)) => "Boolean",
                Some(Json::Number(_)) => "Decimal",
                Some(Json::String(_)) => "String",
                _ => "Any",
            },
            Item::Value(v) => v.type_name(),
        }
    }

    /// The item as JSON: a node's own JSON (null for a primitive that has
    /// only extensions), or the computed value.
    pub fn to_json(&self) -> Json {
        match self {
            Item::Node(n) => n.value.cloned().unwrap_or(Json::Null),
            Item::Value(v) => v.to_json(),
        }
    }

    /// The location of a node; for a computed value, which has none, an
    /// error of kind [`ErrorKind::Location`] (editing it would change nothing).
    pub fn location(&self) -> Result<crate::Location> {
        match self {
            Item::Node(n) => Ok(n.location()),
            Item::Value(v) => Err(Error::new(
                ErrorKind::Location,
                format!("a computed {} has no location in the resource", v.type_name()),
            )),
        }
    }

    /// The typed value of a primitive node or a computed value.
    pub fn value(&self) -> Option<Value> {
        value_of(self)
    }
}

pub(crate) type Coll<'a> = Vec<Item<'a>>;

/// Everything an evaluation sees besides the expression: the resource, the
/// starting focus, external constants and options.
#[derive(Clone)]
pub struct Context<'a> {
    pub(crate) resource: Item<'a>,
    pub(crate) root_resource: Item<'a>,
    pub(crate) focus: Coll<'a>,
    pub(crate) vars: HashMap<String, Coll<'a>>,
    pub(crate) strict: bool,
    pub(crate) now: Option<Temporal>,
}

impl<'a> Context<'a> {
    /// Evaluate against `resource`, which is also the starting focus,
    /// `%resource`, `%rootResource` and `%context`.
    pub fn new(resource: &'a Json) -> Context<'a> {
        let root = Item::root(resource);
        Context {
            resource: root.clone(),
            root_resource: root.clone(),
            focus: vec![root],
            vars: HashMap::new(),
            strict: false,
            now: None,
        }
    }

    /// Starts from these items instead of the resource (for instance a
    /// contained resource found by an earlier evaluation). When the focus is
    /// a single resource node it also becomes `%resource`; locations stay
    /// relative to the outer resource.
    pub fn with_focus(mut self, focus: Vec<Item<'a>>) -> Context<'a> {
        if let [Item::Node(n)] = focus.as_slice()
            && n.is_resource()
        {
            self.resource = focus[0].clone();
        }
        self.focus = focus;
        self
    }

    /// Defines the external constant `%name`.
    pub fn with_var(mut self, name: &str, value: Value) -> Context<'a> {
        self.vars.insert(name.to_string(), vec![Item::Value(value)]);
        self
    }

    /// Defines `%name` as a collection of items (empty for `{}`).
    pub fn with_var_items(mut self, name: &str, items: Vec<Item<'a>>) -> Context<'a> {
        self.vars.insert(name.to_string(), items);
        self
    }

    /// Strict mode: navigating to an element the R4 model does not define
    /// for the focus's type, or starting a path with a type that does not
    /// match the resource, is an error instead of an empty result. The
    /// Microsoft anonymizer (Firely) is lenient, so that is the default.
    pub fn strict(mut self, strict: bool) -> Context<'a> {
        self.strict = strict;
        self
    }

    /// Fixes `now()`, `today()` and `timeOfDay()` (tests; reproducible runs).
    pub fn with_now(mut self, now: Temporal) -> Context<'a> {
        self.now = Some(now);
        self
    }
}

#[derive(Clone)]
pub(crate) struct Scope<'a> {
    pub this: Coll<'a>,
    /// Whether `$this` is the evaluation's starting focus (not a lambda's item).
    pub root: bool,
    pub index: Option<i64>,
    pub total: Option<Coll<'a>>,
}

pub(crate) struct Evaluator<'c, 'a> {
    pub ctx: &'c Context<'a>,
    /// Read once, when first asked for: `now()` is the same throughout an
    /// evaluation, and most evaluations never ask (reading the clock for
    /// each was measurable in views).
    pub now: std::cell::OnceCell<Temporal>,
}

impl Evaluator<'_, '_> {
    pub(crate) fn now(&self) -> Temporal {
        *self.now.get_or_init(|| self.ctx.now.unwrap_or_else(crate::temporal::now))
    }
}

pub(crate) fn boolean<'a>(b: bool) -> Coll<'a> {
    vec![Item::Value(Value::Boolean(b))]
}

/// The single boolean a collection converts to (N1 §Singleton evaluation).
pub(crate) fn to_bool(c: &Coll<'_>, what: &str) -> Result<Option<bool>> {
    match c.as_slice() {
        [] => Ok(None),
        [item] => match value_of(item) {
            Some(Value::Boolean(b)) => Ok(Some(b)),
            // A single non-boolean item counts as true.
            _ => Ok(Some(true)),
        },
        _ => Err(Error::eval(format!("{what} expects a single boolean, found a collection of {} items", c.len()))),
    }
}

/// The single value of a collection, or an error for several items.
pub(crate) fn singleton(c: &Coll<'_>, what: &str) -> Result<Option<Value>> {
    match c.as_slice() {
        [] => Ok(None),
        [item] => Ok(value_of(item)),
        _ => Err(Error::eval(format!("{what} expects a single item, found {}", c.len()))),
    }
}

/// The JSON key `_name` for a key, built without allocating for short keys.
fn with_underscore<'k>(key: &str, buf: &'k mut [u8; 96]) -> Option<&'k str> {
    let n = key.len();
    if n + 1 > buf.len() {
        return None;
    }
    buf[0] = b'_';
    buf[1..=n].copy_from_slice(key.as_bytes());
    std::str::from_utf8(&buf[..=n]).ok()
}

/// Pushes the node(s) held under `key` of `obj` as element `name` of type
/// `ty` (one per array item), pairing primitives with their `_key` companions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_element<'a>(
    obj: &'a serde_json::Map<String, Json>,
    parent: &LocRef<'a>,
    key: &'a str,
    value: Option<&'a Json>,
    name: &'a str,
    ty: FhirType,
    may_have_companions: bool,
    out: &mut Coll<'a>,
) {
    let primitive = ty.name.is_empty() || ty.name.starts_with(|c: char| c.is_ascii_lowercase());
    let companion = if primitive && may_have_companions {
        let mut buf = [0u8; 96];
        with_underscore(key, &mut buf).and_then(|k| obj.get_key_value(k))
    } else {
        None
    };
    let resolve_type = |v: &Json| -> FhirType {
        if (ty.name == "Resource" || ty.name.is_empty())
            && let Some(rt) = v.get("resourceType").and_then(Json::as_str).and_then(|t| r4().type_name(t))
        {
            return FhirType::of(rt);
        }
        ty
    };
    match value {
        Some(Json::Array(items)) => {
            let base = push(parent, Step::Key(key));
            let ext_base = companion.map(|(k, _)| push(parent, Step::Key(k.as_str())));
            let ext_items = companion.and_then(|(_, v)| v.as_array());
            for (i, item) in items.iter().enumerate() {
                let ext = ext_items.and_then(|e| e.get(i)).filter(|e| !e.is_null());
                if item.is_null() && ext.is_none() {
                    continue;
                }
                out.push(Item::Node(Node {
                    value: (!item.is_null()).then_some(item),
                    ext,
                    ty: resolve_type(item),
                    name,
                    loc: push(&base, Step::Index(i)),
                    ext_loc: ext.and(ext_base.as_ref()).and_then(|b| push(b, Step::Index(i))),
                }));
            }
        }
        Some(Json::Null) | None => {
            // A primitive with only an id or extensions.
            if let Some((k, ext)) = companion
                && ext.is_object()
            {
                out.push(Item::Node(Node {
                    value: None,
                    ext: Some(ext),
                    ty,
                    name,
                    loc: push(parent, Step::Key(key)),
                    ext_loc: push(parent, Step::Key(k.as_str())),
                }));
            }
        }
        Some(v) => {
            let ext = companion.map(|(_, e)| e).filter(|e| e.is_object());
            out.push(Item::Node(Node {
                value: Some(v),
                ext,
                ty: resolve_type(v),
                name,
                loc: push(parent, Step::Key(key)),
                ext_loc: ext.and(companion).and_then(|(k, _)| push(parent, Step::Key(k.as_str()))),
            }));
        }
    }
}

/// The object a node's children live in, and the location of that object:
/// the node itself, or a primitive's `_` companion.
fn container<'n, 'a>(node: &'n Node<'a>) -> Option<(&'a serde_json::Map<String, Json>, &'n LocRef<'a>, bool)> {
    match node.value {
        Some(Json::Object(map)) => Some((map, &node.loc, false)),
        _ => match node.ext {
            Some(Json::Object(map)) => Some((map, &node.ext_loc, true)),
            _ => None,
        },
    }
}

/// The children named `name` of `node`, typed by the model.
pub(crate) fn child<'a>(node: &Node<'a>, name: &str, strict: bool, out: &mut Coll<'a>) -> Result<()> {
    let Some((obj, loc, in_companion)) = container(node) else { return Ok(()) };
    let owner = if in_companion { "Element" } else { node.ty.owner };
    if owner.is_empty() {
        // Not in the model (unknown element, non-FHIR JSON): navigate by key.
        if let Some((key, value)) = obj.get_key_value(name) {
            push_element(obj, loc, key, Some(value), key, FhirType::UNKNOWN, true, out);
        }
        return Ok(());
    }
    match r4().child(owner, name) {
        Some(el) if el.is_choice() => {
            for (key, value) in obj {
                if let Some(t) = el.choice_type_of_key(key) {
                    let ty = FhirType { name: t, owner: el.children_owner(t) };
                    push_element(obj, loc, key, Some(value), el.name, ty, true, out);
                }
            }
        }
        Some(el) => {
            let t = el.types[0];
            let ty = FhirType { name: t, owner: el.children_owner(t) };
            match obj.get_key_value(name) {
                Some((key, value)) => push_element(obj, loc, key, Some(value), el.name, ty, true, out),
                None => push_element(obj, loc, el.name, None, el.name, ty, true, out),
            }
        }
        // `Observation.valueQuantity` silently matching nothing would let a
        // de-identification rule miss what it was written for; FHIRPath
        // reaches choices by their base name only, so say so.
        None if element_for_key(owner, name).is_some() => {
            return Err(Error::new(
                ErrorKind::Semantic,
                format!(
                    "'{name}' is a choice type's variant: use its base name with ofType(), e.g. value.ofType(Quantity)"
                ),
            ));
        }
        None if strict => {
            return Err(Error::new(
                ErrorKind::Semantic,
                format!("{} has no element '{name}'", if node.ty.name.is_empty() { owner } else { node.ty.name }),
            ));
        }
        None => {}
    }
    Ok(())
}

fn element_for_key(owner: &str, key: &str) -> Option<(&'static veil_fhir::Element, &'static str)> {
    r4().element_for_key(owner, key)
}

/// All children of a node, in document order.
pub(crate) fn children<'a>(node: &Node<'a>, out: &mut Coll<'a>) {
    let Some((obj, loc, in_companion)) = container(node) else { return };
    let owner = if in_companion { "Element" } else { node.ty.owner };
    // One scan of the keys spares a hash look-up per primitive child.
    let may_have_companions = obj.keys().any(|k| k.starts_with('_'));
    for (key, value) in obj {
        if key == "resourceType" {
            continue;
        }
        let (name, bare_key) = match key.strip_prefix('_') {
            // A companion is visited with its primitive; alone, it stands for one.
            Some(base) if obj.contains_key(base) => continue,
            Some(base) => (base, true),
            None => (key.as_str(), false),
        };
        let found = if owner.is_empty() { None } else { element_for_key(owner, name) };
        let (el_name, ty): (&'a str, FhirType) = match found {
            Some((el, t)) => (el.name, FhirType { name: t, owner: el.children_owner(t) }),
            None => (name, FhirType::UNKNOWN),
        };
        let value = if bare_key { None } else { Some(value) };
        // The element's name is needed as a key with the right lifetime.
        let key_ref: &'a str =
            if bare_key { obj.get_key_value(key.as_str()).map(|(k, _)| &k[1..]).unwrap_or(name) } else { key };
        push_element(obj, loc, key_ref, value, el_name, ty, may_have_companions, out);
    }
}

impl<'c, 'a> Evaluator<'c, 'a> {
    pub(crate) fn eval(&self, op: &Op, scope: &Scope<'a>) -> Result<Coll<'a>> {
        match op {
            Op::Empty => Ok(Vec::new()),
            Op::Lit(v) => Ok(vec![Item::Value(v.clone())]),
            Op::Lits(vs) => Ok(vs.iter().cloned().map(Item::Value).collect()),
            Op::Ident(name, tf) => self.navigate(&scope.this, name, tf.as_ref(), scope.root),
            Op::Member(target, name, tf) => {
                let focus = self.eval(target, scope)?;
                self.navigate(&focus, name, tf.as_ref(), false)
            }
            Op::This => Ok(scope.this.clone()),
            Op::Index => Ok(scope.index.map(|i| vec![Item::Value(Value::Integer(i))]).unwrap_or_default()),
            Op::Total => Ok(scope.total.clone().unwrap_or_default()),
            Op::External(name) => self.external(name),
            Op::Call(target, func, args) => {
                let input = match target {
                    Some(t) => self.eval(t, scope)?,
                    None => scope.this.clone(),
                };
                self.call(*func, input, args, scope)
            }
            Op::Indexer(target, index) => {
                let items = self.eval(target, scope)?;
                let idx = self.eval(index, scope)?;
                match singleton(&idx, "an indexer")? {
                    Some(Value::Integer(i)) if i >= 0 => Ok(items.into_iter().nth(i as usize).into_iter().collect()),
                    Some(Value::Integer(_)) | None => Ok(Vec::new()),
                    Some(_) => Err(Error::eval("an indexer must be an integer")),
                }
            }
            Op::Neg(inner) => {
                let c = self.eval(inner, scope)?;
                Ok(match singleton(&c, "unary minus")? {
                    None => Vec::new(),
                    Some(Value::Integer(i)) => vec![Item::Value(Value::Integer(-i))],
                    Some(Value::Decimal(d)) => {
                        let mut n = -d;
                        if n.is_zero() {
                            n.set_sign_positive(true);
                        }
                        vec![Item::Value(Value::Decimal(n))]
                    }
                    Some(Value::Quantity(d, u)) => vec![Item::Value(Value::Quantity(-d, u))],
                    Some(v) => return Err(Error::eval(format!("cannot negate {}", v.type_name()))),
                })
            }
            Op::Binary(op, l, r) => self.binary(*op, l, r, scope),
            Op::Is(inner, ty) => {
                let c = self.eval(inner, scope)?;
                match c.as_slice() {
                    [] => Ok(Vec::new()),
                    [item] => Ok(boolean(is_type(item, ty))),
                    _ => Err(Error::eval("'is' expects a single item")),
                }
            }
            Op::As(inner, ty) => {
                let c = self.eval(inner, scope)?;
                if c.len() > 1 {
                    return Err(Error::eval("'as' expects a single item"));
                }
                Ok(c.into_iter().filter(|i| as_type(i, ty)).collect())
            }
        }
    }

    fn navigate(&self, focus: &Coll<'a>, name: &str, tf: Option<&TypeSpec>, at_root: bool) -> Result<Coll<'a>> {
        let mut out = Vec::new();
        for item in focus {
            let node = match item {
                Item::Node(node) => node,
                Item::Value(Value::TypeInfo { namespace, name: type_name }) => {
                    match name {
                        "namespace" => out.push(Item::Value(Value::String((*namespace).into()))),
                        "name" => out.push(Item::Value(Value::String((*type_name).into()))),
                        _ => {}
                    }
                    continue;
                }
                Item::Value(_) => continue,
            };
            if let Some(TypeSpec::Fhir(t)) = tf {
                // A type name filters the focus: `Patient.name` on a Patient.
                if !node.ty.name.is_empty() && r4().is_subtype(node.ty.name, t) {
                    out.push(item.clone());
                } else if self.ctx.strict && at_root && node.is_resource() {
                    return Err(Error::new(
                        ErrorKind::Semantic,
                        format!("the expression starts with {t} but the context is a {}", node.ty.name),
                    ));
                }
                continue;
            }
            child(node, name, self.ctx.strict, &mut out)?;
        }
        Ok(out)
    }

    fn external(&self, name: &str) -> Result<Coll<'a>> {
        let s = |v: &str| Ok(vec![Item::Value(Value::String(v.to_string()))]);
        if let Some(v) = self.ctx.vars.get(name) {
            return Ok(v.clone());
        }
        match name {
            "resource" => Ok(vec![self.ctx.resource.clone()]),
            "rootResource" => Ok(vec![self.ctx.root_resource.clone()]),
            "context" => Ok(self.ctx.focus.clone()),
            "ucum" => s("http://unitsofmeasure.org"),
            "sct" => s("http://snomed.info/sct"),
            "loinc" => s("http://loinc.org"),
            _ => {
                if let Some(vs) = name.strip_prefix("vs-") {
                    return s(&format!("http://hl7.org/fhir/ValueSet/{vs}"));
                }
                if let Some(ext) = name.strip_prefix("ext-") {
                    return s(&format!("http://hl7.org/fhir/StructureDefinition/{ext}"));
                }
                Err(Error::new(ErrorKind::Semantic, format!("unknown external constant %{name}")))
            }
        }
    }

    fn binary(&self, op: BinOp, l: &Op, r: &Op, scope: &Scope<'a>) -> Result<Coll<'a>> {
        let left = self.eval(l, scope)?;
        // Boolean operators are three-valued (N1 §6.5).
        if matches!(op, BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies) {
            let a = to_bool(&left, "a boolean operator")?;
            // Short-circuit where the result no longer depends on the right side.
            match (op, a) {
                (BinOp::And, Some(false)) => return Ok(boolean(false)),
                (BinOp::Or, Some(true)) => return Ok(boolean(true)),
                (BinOp::Implies, Some(false)) => return Ok(boolean(true)),
                _ => {}
            }
            let b = to_bool(&self.eval(r, scope)?, "a boolean operator")?;
            let result = match op {
                BinOp::And => match (a, b) {
                    (Some(true), Some(true)) => Some(true),
                    (_, Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Or => match (a, b) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Xor => a.zip(b).map(|(a, b)| a != b),
                _ => match (a, b) {
                    (Some(true), b) => b,
                    (None, Some(true)) => Some(true),
                    _ => None,
                },
            };
            return Ok(result.map(boolean).unwrap_or_default());
        }
        let right = self.eval(r, scope)?;
        match op {
            BinOp::Union => Ok(union(left, right)),
            BinOp::In => membership(&left, &right),
            BinOp::Contains => membership(&right, &left),
            BinOp::Eq | BinOp::Ne => {
                if left.is_empty() || right.is_empty() {
                    return Ok(Vec::new());
                }
                let eq = if left.len() != right.len() {
                    Some(false)
                } else {
                    let mut all = Some(true);
                    for (a, b) in left.iter().zip(&right) {
                        match ops::equal_items(a, b) {
                            Some(true) => {}
                            Some(false) => {
                                all = Some(false);
                                break;
                            }
                            None => all = None,
                        }
                    }
                    all
                };
                Ok(eq.map(|e| boolean(if op == BinOp::Eq { e } else { !e })).unwrap_or_default())
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                let eq = equivalent_collections(&left, &right);
                Ok(boolean(if op == BinOp::Equiv { eq } else { !eq }))
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                let (Some(a), Some(b)) = (singleton(&left, "a comparison")?, singleton(&right, "a comparison")?) else {
                    return Ok(Vec::new());
                };
                let Some(ord) = ops::compare_values(&a, &b)? else { return Ok(Vec::new()) };
                Ok(boolean(match op {
                    BinOp::Lt => ord.is_lt(),
                    BinOp::Gt => ord.is_gt(),
                    BinOp::Le => ord.is_le(),
                    _ => ord.is_ge(),
                }))
            }
            BinOp::Concat => {
                let text = |c: &Coll<'a>| -> Result<String> {
                    Ok(match singleton(c, "&")? {
                        None => String::new(),
                        Some(Value::String(s)) => s,
                        Some(v) => return Err(Error::eval(format!("& expects strings, found {}", v.type_name()))),
                    })
                };
                Ok(vec![Item::Value(Value::String(text(&left)? + &text(&right)?))])
            }
            _ => {
                let (Some(a), Some(b)) = (singleton(&left, "arithmetic")?, singleton(&right, "arithmetic")?) else {
                    return Ok(Vec::new());
                };
                Ok(ops::arithmetic(op, &a, &b)?.map(|v| vec![Item::Value(v)]).unwrap_or_default())
            }
        }
    }

    pub(crate) fn call(&self, func: Func, input: Coll<'a>, args: &[CArg], scope: &Scope<'a>) -> Result<Coll<'a>> {
        crate::functions::call(self, func, input, args, scope)
    }

    /// Evaluates a value argument against the call's own `$this`.
    pub(crate) fn arg(&self, args: &[CArg], i: usize, scope: &Scope<'a>) -> Result<Option<Coll<'a>>> {
        match args.get(i) {
            Some(CArg::Value(op)) | Some(CArg::Lambda(op)) => self.eval(op, scope).map(Some),
            Some(CArg::Type(_)) | None => Ok(None),
        }
    }

    /// Evaluates a lambda argument with `$this` bound to one item.
    pub(crate) fn lambda(&self, op: &Op, item: &Item<'a>, index: usize, total: Option<&Coll<'a>>) -> Result<Coll<'a>> {
        let scope = Scope { this: vec![item.clone()], root: false, index: Some(index as i64), total: total.cloned() };
        self.eval(op, &scope)
    }
}

pub(crate) fn union<'a>(left: Coll<'a>, right: Coll<'a>) -> Coll<'a> {
    let mut out: Coll<'a> = Vec::with_capacity(left.len() + right.len());
    for item in left.into_iter().chain(right) {
        if !out.iter().any(|o| same_item(o, &item)) {
            out.push(item);
        }
    }
    out
}

/// Equality as used for de-duplication (`distinct`, `|`): the same node, or equal values.
pub(crate) fn same_item(a: &Item<'_>, b: &Item<'_>) -> bool {
    if let (Item::Node(x), Item::Node(y)) = (a, b)
        && x.same_node(y)
    {
        return true;
    }
    ops::equal_items(a, b) == Some(true)
}

fn membership<'a>(needle: &Coll<'a>, haystack: &Coll<'a>) -> Result<Coll<'a>> {
    match needle.as_slice() {
        [] => Ok(Vec::new()),
        [item] => Ok(boolean(haystack.iter().any(|h| ops::equal_items(item, h) == Some(true)))),
        _ => Err(Error::eval("membership expects a single item on its left")),
    }
}

fn equivalent_collections(a: &Coll<'_>, b: &Coll<'_>) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Order does not matter for equivalence: match each item once.
    let mut used = vec![false; b.len()];
    a.iter().all(|x| match b.iter().enumerate().find(|(i, y)| !used[*i] && ops::equivalent_items(x, y)) {
        Some((i, _)) => {
            used[i] = true;
            true
        }
        None => false,
    })
}

/// `is`: the item's type is the named type or derives from it.
pub(crate) fn is_type(item: &Item<'_>, ty: &TypeSpec) -> bool {
    match (item, ty) {
        (_, TypeSpec::None) => false,
        (Item::Value(v), TypeSpec::System(t)) => *t == "Any" || v.type_name() == *t,
        (Item::Value(_), TypeSpec::Fhir(_)) => false,
        (Item::Node(n), TypeSpec::Fhir(t)) => !n.ty.name.is_empty() && r4().is_subtype(n.ty.name, t),
        (Item::Node(n), TypeSpec::System(t)) => *t == "Any" || (n.ty.name.is_empty() && item.type_name() == *t),
    }
}

/// `as` and `ofType`: like `is`, except that a FHIR primitive is only its
/// own type (a `code` is not returned by `as(string)`), as the HL7 suite
/// and Firely both have it.
pub(crate) fn as_type(item: &Item<'_>, ty: &TypeSpec) -> bool {
    match (item, ty) {
        (Item::Node(n), TypeSpec::Fhir(t)) if r4().is_primitive(t) => n.ty.name == *t,
        _ => is_type(item, ty),
    }
}

/// The System type a node's value converts to, for `type()` reflection.
pub(crate) fn reflect_type(item: &Item<'_>) -> (&'static str, &'static str) {
    match item {
        Item::Value(v) => ("System", v.type_name()),
        Item::Node(n) if !n.ty.name.is_empty() => ("FHIR", n.ty.name),
        Item::Node(_) => ("System", system_type_of("").unwrap_or(item.type_name())),
    }
}
