//! Nodes of a resource tree and their locations: what makes a result a
//! *handle* that a caller can follow back into the resource and edit.

use std::borrow::Cow;
use std::fmt::{self, Write};
use std::rc::Rc;

use serde_json::{Map, Value as Json};

use crate::error::{Error, ErrorKind, Result};

/// The FHIR type of a node and where its children are defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FhirType {
    /// Type code (`HumanName`, `date`, `BackboneElement`) or resource type;
    /// empty when the model does not know the element.
    pub name: &'static str,
    /// The model key its children are found under: the type name, or the
    /// element path for backbone elements (`Patient.contact`).
    pub owner: &'static str,
}

impl FhirType {
    pub(crate) const UNKNOWN: FhirType = FhirType { name: "", owner: "" };
    pub(crate) fn of(name: &'static str) -> FhirType {
        FhirType { name, owner: name }
    }
}

/// One step of a path from the root of the evaluated resource.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A persistent list of steps, shared by all the nodes below a common parent,
/// so that descending into a tree costs one small allocation per node.
#[derive(Debug)]
pub(crate) struct Loc<'a> {
    parent: Option<Rc<Loc<'a>>>,
    step: Step<'a>,
}

pub(crate) type LocRef<'a> = Option<Rc<Loc<'a>>>;

pub(crate) fn push<'a>(parent: &LocRef<'a>, step: Step<'a>) -> LocRef<'a> {
    Some(Rc::new(Loc { parent: parent.clone(), step }))
}

/// A node of the resource tree, as FHIRPath sees it.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// The JSON value; `None` for a primitive that has only an id or extensions.
    pub(crate) value: Option<&'a Json>,
    /// For primitives: the `_name` companion object holding `id` and `extension`.
    pub(crate) ext: Option<&'a Json>,
    pub(crate) ty: FhirType,
    /// The element's name (a choice element's base name: `value`).
    pub(crate) name: &'a str,
    pub(crate) loc: LocRef<'a>,
    /// Where the `_name` companion sits, when there is one.
    pub(crate) ext_loc: LocRef<'a>,
}

impl<'a> Node<'a> {
    /// The root node of a resource (or any JSON value) under evaluation.
    pub(crate) fn root(json: &'a Json) -> Node<'a> {
        let ty = json
            .get("resourceType")
            .and_then(Json::as_str)
            .and_then(|t| veil_fhir::r4().type_name(t))
            .filter(|t| veil_fhir::r4().is_resource_type(t))
            .map_or(FhirType::UNKNOWN, FhirType::of);
        Node { value: Some(json), ext: None, ty, name: ty.name, loc: None, ext_loc: None }
    }

    /// The JSON value at this node (`None` for a primitive with only extensions).
    pub fn json(&self) -> Option<&'a Json> {
        self.value
    }

    /// The FHIR type name (`HumanName`, `date`, `Patient`); empty if unknown to the model.
    pub fn fhir_type(&self) -> &'static str {
        self.ty.name
    }

    /// The element name (base name for choice elements).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Whether this node is a resource (the root, a contained resource, a Bundle entry's resource).
    pub fn is_resource(&self) -> bool {
        !self.ty.name.is_empty() && veil_fhir::r4().is_resource_type(self.ty.name)
    }

    /// The owned location of this node, usable after the evaluation's borrow ends.
    pub fn location(&self) -> Location {
        let mut steps = Vec::new();
        let mut cur = self.loc.as_deref();
        while let Some(l) = cur {
            steps.push(match l.step {
                Step::Key(k) => PathStep::Key(intern(k)),
                Step::Index(i) => PathStep::Index(i),
            });
            cur = l.parent.as_deref();
        }
        steps.reverse();
        Location { steps }
    }

    /// The node's children in document order, typed by the R4 model
    /// (a primitive's children are its `id` and `extension`).
    pub fn children(&self) -> Vec<Node<'a>> {
        let mut items = Vec::new();
        crate::eval::children(self, &mut items);
        items
            .into_iter()
            .filter_map(|i| match i {
                crate::Item::Node(n) => Some(n),
                crate::Item::Value(_) => None,
            })
            .collect()
    }

    /// Whether this node holds a FHIR primitive value (or could: a
    /// primitive that has only extensions).
    pub fn is_primitive(&self) -> bool {
        match self.value {
            Some(v) => !v.is_object() && !v.is_array(),
            None => true,
        }
    }

    /// Whether two nodes are the same place in the same tree.
    pub fn same_node(&self, other: &Node<'_>) -> bool {
        match (self.value, other.value) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (None, None) => match (self.ext, other.ext) {
                (Some(a), Some(b)) => std::ptr::eq(a, b),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The node at `location` in `root`, typed as a walk from the root would
/// type it; `None` if there is no node there.
pub fn node_at<'a>(root: &'a Json, location: &Location) -> Option<Node<'a>> {
    let mut node = Node::root(root);
    let target = location.steps();
    let mut depth = 0;
    while depth < target.len() {
        let next = node.children().into_iter().find_map(|c| {
            let loc = c.location();
            target.starts_with(loc.steps()).then_some((c, loc.steps().len()))
        })?;
        if next.1 <= depth {
            return None;
        }
        node = next.0;
        depth = next.1;
    }
    Some(node)
}

/// A property name as a location step: the model's static copy when FHIR
/// defines it, an owned copy otherwise.
pub(crate) fn intern(key: &str) -> Cow<'static, str> {
    match veil_fhir::r4().json_key(key) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(key.to_string()),
    }
}

/// One step of an owned [`Location`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathStep {
    /// An object property, as written in the JSON (`valueQuantity`,
    /// `_birthDate`); names FHIR defines are borrowed from the model, so
    /// locations are cheap to build and clone.
    Key(Cow<'static, str>),
    /// An array position.
    Index(usize),
}

/// Where a node sits in its resource: the JSON steps from the root. Through
/// it a caller reads, replaces or deletes the node after evaluation.
///
/// Primitive values keep their id and extensions in a `_name` companion
/// (`birthDate` / `_birthDate`, `given[1]` / `_given[1]`); replacing a
/// primitive keeps its companion, deleting it deletes both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    steps: Vec<PathStep>,
}

impl Location {
    /// The steps from the root.
    pub fn steps(&self) -> &[PathStep] {
        &self.steps
    }

    /// Builds a location from steps.
    pub fn from_steps(steps: Vec<PathStep>) -> Location {
        Location { steps }
    }

    /// Follows the location in `root`.
    pub fn get<'v>(&self, root: &'v Json) -> Option<&'v Json> {
        self.steps.iter().try_fold(root, |v, s| match s {
            PathStep::Key(k) => v.get(k.as_ref()),
            PathStep::Index(i) => v.get(*i),
        })
    }

    /// Follows the location in `root`, mutably.
    pub fn get_mut<'v>(&self, root: &'v mut Json) -> Option<&'v mut Json> {
        follow_mut(root, &self.steps)
    }

    /// Replaces the node's value, returning the old one. A primitive's `_`
    /// companion (its id and extensions) is left as it is.
    pub fn replace(&self, root: &mut Json, new: Json) -> Result<Json> {
        if self.steps.is_empty() {
            return Ok(std::mem::replace(root, new));
        }
        let (parent_steps, last) = self.steps.split_at(self.steps.len() - 1);
        let parent = follow_mut(root, parent_steps).ok_or_else(gone)?;
        match (&last[0], parent) {
            (PathStep::Key(k), Json::Object(map)) => match map.get_mut(k.as_ref()) {
                Some(slot) => Ok(std::mem::replace(slot, new)),
                None => {
                    map.insert(k.to_string(), new);
                    Ok(Json::Null)
                }
            },
            (PathStep::Index(i), Json::Array(items)) if *i < items.len() => Ok(std::mem::replace(&mut items[*i], new)),
            _ => Err(gone()),
        }
    }

    /// Deletes the node: an object property is removed (with its `_`
    /// companion), an array item is removed (and the companion array's item
    /// at the same position, so the two stay aligned); an array left empty is
    /// removed too, because FHIR JSON has no empty arrays. Deleting the root
    /// is an error.
    ///
    /// Deleting shifts later items of the same array: to delete several
    /// nodes, use [`remove_all`].
    pub fn remove(&self, root: &mut Json) -> Result<Json> {
        let n = self.steps.len();
        match self.steps.as_slice() {
            [] => Err(Error::new(ErrorKind::Location, "cannot delete the root of the resource")),
            [.., PathStep::Key(k)] => {
                let map = self.parent_object(root, n - 1)?;
                let old = map.shift_remove(k.as_ref());
                let companion = map.shift_remove(&companion_key(k));
                old.or(companion).ok_or_else(gone)
            }
            [.., PathStep::Key(k), PathStep::Index(i)] => {
                let map = self.parent_object(root, n - 2)?;
                let old = remove_index(map, k, *i)?;
                let ck = companion_key(k);
                if map.contains_key(&ck) {
                    remove_index(map, &ck, *i)?;
                    // A companion array of nulls only carries nothing.
                    if map.get(&ck).and_then(Json::as_array).is_some_and(|a| a.iter().all(Json::is_null)) {
                        map.shift_remove(&ck);
                    }
                }
                Ok(old)
            }
            _ => Err(gone()),
        }
    }

    fn parent_object<'v>(&self, root: &'v mut Json, len: usize) -> Result<&'v mut Map<String, Json>> {
        follow_mut(root, &self.steps[..len]).and_then(Json::as_object_mut).ok_or_else(gone)
    }
}

fn follow_mut<'v>(root: &'v mut Json, steps: &[PathStep]) -> Option<&'v mut Json> {
    steps.iter().try_fold(root, |v, s| match s {
        PathStep::Key(k) => v.get_mut(k.as_ref()),
        PathStep::Index(i) => v.get_mut(*i),
    })
}

fn remove_index(map: &mut Map<String, Json>, key: &str, i: usize) -> Result<Json> {
    let items = map.get_mut(key).and_then(Json::as_array_mut).ok_or_else(gone)?;
    if i >= items.len() {
        return Err(gone());
    }
    let old = items.remove(i);
    if items.is_empty() {
        map.shift_remove(key);
    }
    Ok(old)
}

/// `given` ↔ `_given`.
fn companion_key(key: &str) -> String {
    match key.strip_prefix('_') {
        Some(k) => k.to_string(),
        None => format!("_{key}"),
    }
}

fn gone() -> Error {
    Error::new(ErrorKind::Location, "the resource has no node at this location any more")
}

/// Deletes every node at `locations` from `root`, in an order that keeps the
/// remaining locations valid (later array items first, children before their
/// parents). Locations that no longer resolve (a parent was deleted first)
/// are skipped; the number of nodes deleted is returned.
pub fn remove_all(root: &mut Json, locations: &[Location]) -> usize {
    let mut sorted: Vec<&Location> = locations.iter().collect();
    // Reverse lexicographic order of steps puts higher indices and deeper
    // nodes before the nodes they would shift or contain.
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    sorted.into_iter().filter(|l| l.remove(root).is_ok()).count()
}

impl fmt::Display for Location {
    /// FHIRPath-like: `name[0].given[1]`, with `_` companions shown under
    /// their element's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.steps {
            match s {
                PathStep::Key(k) => {
                    if !first {
                        f.write_char('.')?;
                    }
                    f.write_str(k.strip_prefix('_').unwrap_or(k))?;
                }
                PathStep::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}
