//! A flat, pre-order index of one resource's nodes (not entering nested
//! resources), built once per resource like the anonymizer's type/name
//! cache (ms-anonymizer.md §4.2): `nodesByType('X')` rules become look-ups,
//! and a node's subtree is a contiguous range, so "process the node and every
//! non-resource descendant, skipping visited subtrees" (§4.3) is a loop.
//!
//! It walks the JSON directly with the R4 model, typing nodes exactly as
//! veil-fhirpath does (a test checks the two agree), because this walk runs
//! for every resource de-identified and is its hottest loop.

use std::borrow::Cow;
use std::cell::OnceCell;

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value as Json};
use veil_fhir::r4;
use veil_fhirpath::{Location, PathStep};

/// One node of the index.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub loc: Location,
    /// FHIR type name (`date`, `HumanName`, `Patient`); empty if unknown.
    pub ty: &'static str,
    /// Element name (a choice's base name); the model's copy when it has one.
    pub name: Cow<'static, str>,
    /// Index of the parent entry (`usize::MAX` for the first).
    pub parent: usize,
    /// One past the last entry of this node's subtree.
    pub end: usize,
    /// A nested resource (a leaf here; it gets its own index and pass).
    pub nested_resource: bool,
    /// Whether it holds a primitive value.
    pub primitive: bool,
}

/// The types and names the policy's fast-path rules ask for, so that the
/// index files those nodes as it walks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    pub types: FxHashSet<String>,
    pub names: FxHashSet<String>,
}

pub(crate) struct Index {
    pub entries: Vec<Entry>,
    /// Entries already processed by a rule (the anonymizer's visited set, for this index).
    pub visited: Vec<bool>,
    by_type: FxHashMap<&'static str, Vec<usize>>,
    by_name: FxHashMap<Cow<'static, str>, Vec<usize>>,
    /// Whether a repeating element was written as a single value.
    pub needs_arrays: bool,
    /// The first property R4 does not define where it stands, if any.
    pub unknown: Option<Location>,
    /// Built on first use: most resources only meet the fast paths.
    by_loc: OnceCell<FxHashMap<Location, usize>>,
}

fn key_step(key: &str) -> PathStep {
    PathStep::Key(match r4().json_key(key) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(key.to_string()),
    })
}

/// `parent` + `key` (+ `[index]`).
pub(crate) fn child_loc(parent: &Location, key: &str, index: Option<usize>) -> Location {
    child_loc_step(parent, key_step(key), index)
}

fn child_loc_step(parent: &Location, step: PathStep, index: Option<usize>) -> Location {
    let mut steps = Vec::with_capacity(parent.steps().len() + 2);
    steps.extend_from_slice(parent.steps());
    steps.push(step);
    if let Some(i) = index {
        steps.push(PathStep::Index(i));
    }
    Location::from_steps(steps)
}

struct Builder<'w> {
    entries: Vec<Entry>,
    wanted: &'w Wanted,
    by_type: FxHashMap<&'static str, Vec<usize>>,
    by_name: FxHashMap<Cow<'static, str>, Vec<usize>>,
    needs_arrays: bool,
    unknown: Option<Location>,
}

impl Builder<'_> {
    fn push(&mut self, entry: Entry) -> usize {
        let i = self.entries.len();
        if i > 0 {
            if self.wanted.types.contains(entry.ty) {
                self.by_type.entry(entry.ty).or_default().push(i);
            }
            if self.wanted.names.contains(entry.name.as_ref()) {
                self.by_name.entry(entry.name.clone()).or_default().push(i);
            }
        }
        self.entries.push(entry);
        i
    }

    /// Indexes the properties of `obj`, whose elements are defined under `owner`.
    fn object(&mut self, obj: &Map<String, Json>, owner: &'static str, loc: &Location, parent: usize) {
        let may_have_companions = obj.keys().any(|k| k.starts_with('_'));
        for (key, value) in obj {
            if key == "resourceType" {
                continue;
            }
            let (name, value) = match key.strip_prefix('_') {
                // A companion is indexed with its primitive; alone, it stands for one.
                Some(base) if obj.contains_key(base) => continue,
                Some(base) => (base, None),
                None => (key.as_str(), Some(value)),
            };
            let found = if owner.is_empty() { None } else { r4().element_for_key(owner, name) };
            if found.is_none() && !owner.is_empty() && self.unknown.is_none() {
                // Not R4: the anonymizer refuses such input, and an untyped
                // element would escape every nodesByType rule.
                self.unknown = Some(child_loc(loc, key, None));
            }
            let (el_name, ty, child_owner, repeats): (Cow<'static, str>, &'static str, &'static str, bool) = match found
            {
                Some((el, t)) => (Cow::Borrowed(el.name), t, el.children_owner(t), el.repeats),
                None => (Cow::Owned(name.to_string()), "", "", false),
            };
            let companion = if may_have_companions { obj.get(&format!("_{name}")) } else { None };
            // The model's own copy of the key when the key is the element's name.
            let step = || match &el_name {
                Cow::Borrowed(n) if *n == name => PathStep::Key(Cow::Borrowed(*n)),
                _ => key_step(name),
            };
            match value {
                Some(Json::Array(items)) => {
                    let ext = companion.and_then(Json::as_array);
                    for (i, item) in items.iter().enumerate() {
                        let ext_item = ext.and_then(|e| e.get(i)).filter(|e| e.is_object());
                        if item.is_null() && ext_item.is_none() {
                            continue;
                        }
                        let item_loc = child_loc_step(loc, step(), Some(i));
                        let ext_loc = ext_item.map(|_| child_loc(loc, &format!("_{name}"), Some(i)));
                        self.node(item, ext_item, ext_loc, item_loc, el_name.clone(), ty, child_owner, parent);
                    }
                }
                Some(v) => {
                    if repeats && !v.is_null() {
                        self.needs_arrays = true;
                    }
                    let ext = companion.filter(|e| e.is_object());
                    let ext_loc = ext.map(|_| child_loc(loc, &format!("_{name}"), None));
                    let item_loc = child_loc_step(loc, step(), None);
                    self.node(v, ext, ext_loc, item_loc, el_name, ty, child_owner, parent);
                }
                None => {
                    // Only a companion: a primitive with an id or extensions and no value.
                    if let Some(ext) = companion.filter(|e| e.is_object()) {
                        let ext_loc = child_loc(loc, key, None);
                        self.node(
                            &Json::Null,
                            Some(ext),
                            Some(ext_loc),
                            child_loc(loc, name, None),
                            el_name,
                            ty,
                            child_owner,
                            parent,
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        value: &Json,
        ext: Option<&Json>,
        ext_loc: Option<Location>,
        loc: Location,
        name: Cow<'static, str>,
        ty: &'static str,
        owner: &'static str,
        parent: usize,
    ) {
        let declared = value.get("resourceType").and_then(Json::as_str);
        let resource_type = declared.and_then(|t| r4().type_name(t)).filter(|t| r4().is_resource_type(t));
        if declared.is_some() && resource_type.is_none() && self.unknown.is_none() && ty == "Resource" {
            self.unknown = Some(loc.clone());
        }
        if let Some(rt) = resource_type {
            // A nested resource: a leaf here, processed in its own pass.
            let i = self.push(Entry { loc, ty: rt, name, parent, end: 0, nested_resource: true, primitive: false });
            self.entries[i].end = i + 1;
            return;
        }
        let primitive = !value.is_object() && !value.is_array();
        let ty = if ty.is_empty() || ty == "Resource" { "" } else { ty };
        let i = self.push(Entry { loc, ty, name, parent, end: 0, nested_resource: false, primitive });
        match value {
            Json::Object(obj) => {
                let loc = self.entries[i].loc.clone();
                self.object(obj, owner, &loc, i);
            }
            _ => {
                if let (Some(Json::Object(ext)), Some(ext_loc)) = (ext, ext_loc) {
                    // A primitive's id and extensions, defined on Element.
                    self.object(ext, "Element", &ext_loc, i);
                }
            }
        }
        self.entries[i].end = self.entries.len();
    }
}

/// The model key the parent of `loc` defines its children under.
fn parent_owner(doc: &Json, loc: &Location) -> Option<&'static str> {
    let steps = loc.steps();
    let cut = match steps {
        [.., PathStep::Key(_), PathStep::Index(_)] => steps.len() - 2,
        [.., PathStep::Key(_)] => steps.len() - 1,
        _ => return None,
    };
    let parent = veil_fhirpath::node_at(doc, &Location::from_steps(steps[..cut].to_vec()))?;
    let ty = parent.fhir_type();
    if r4().is_resource_type(ty) {
        return Some(ty);
    }
    // A backbone element: its children are defined under its path.
    let grand = parent_owner(doc, &parent.location())?;
    r4().element_for_key(grand, parent.name()).map(|(el, t)| el.children_owner(t))
}

/// The `_name` companion location of a primitive's location.
pub(crate) fn companion_of(loc: &Location) -> Option<Location> {
    let mut steps = loc.steps().to_vec();
    let at = match steps.as_slice() {
        [.., PathStep::Key(_), PathStep::Index(_)] => steps.len() - 2,
        [.., PathStep::Key(_)] => steps.len() - 1,
        _ => return None,
    };
    if let PathStep::Key(k) = &steps[at] {
        steps[at] = key_step(&format!("_{k}"));
    }
    Some(Location::from_steps(steps))
}

impl Index {
    /// Indexes the resource at `loc` and its descendants, stopping at nested
    /// resources; `None` if there is no resource there.
    pub fn build(doc: &Json, loc: &Location, wanted: &Wanted) -> Option<Index> {
        let json = loc.get(doc)?;
        let obj = json.as_object()?;
        let rt = obj.get("resourceType").and_then(Json::as_str).and_then(|t| r4().type_name(t))?;
        let mut b = Builder {
            entries: Vec::with_capacity(64),
            wanted,
            by_type: FxHashMap::default(),
            by_name: FxHashMap::default(),
            needs_arrays: false,
            unknown: None,
        };
        b.push(Entry {
            loc: loc.clone(),
            ty: rt,
            name: Cow::Borrowed(rt),
            parent: usize::MAX,
            end: 0,
            nested_resource: false,
            primitive: false,
        });
        b.object(obj, rt, loc, 0);
        let n = b.entries.len();
        b.entries[0].end = n;
        Some(Index {
            visited: vec![false; n],
            entries: b.entries,
            by_type: b.by_type,
            by_name: b.by_name,
            needs_arrays: b.needs_arrays,
            unknown: b.unknown,
            by_loc: OnceCell::new(),
        })
    }

    /// Indexes any node (not only a resource) and its descendants, for a
    /// rule that reached into a nested resource.
    pub fn build_subtree(doc: &Json, loc: &Location, wanted: &Wanted) -> Option<Index> {
        let node = veil_fhirpath::node_at(doc, loc)?;
        let json = loc.get(doc)?;
        if json.get("resourceType").is_some() {
            return Index::build(doc, loc, wanted);
        }
        let mut b = Builder {
            entries: Vec::new(),
            wanted,
            by_type: FxHashMap::default(),
            by_name: FxHashMap::default(),
            needs_arrays: false,
            unknown: None,
        };
        let ty = node.fhir_type();
        let owner = if ty.is_empty() {
            ""
        } else {
            r4().element_for_key(parent_owner(doc, loc)?, node.name()).map_or(ty, |(el, t)| el.children_owner(t))
        };
        let name = Cow::Owned(node.name().to_string());
        let ext_loc = companion_of(loc);
        let ext = ext_loc.as_ref().and_then(|l| l.get(doc)).filter(|e| e.is_object());
        b.node(json, ext, ext_loc.filter(|_| ext.is_some()), loc.clone(), name, ty, owner, usize::MAX);
        let n = b.entries.len();
        Some(Index {
            visited: vec![false; n],
            entries: b.entries,
            by_type: b.by_type,
            by_name: b.by_name,
            needs_arrays: false,
            unknown: None,
            by_loc: OnceCell::new(),
        })
    }

    pub fn position(&self, loc: &Location) -> Option<usize> {
        // A direct child of the resource (`Resource.id`, `Patient.name`) is
        // found among the first level without building the map.
        if let Some(root) = self.entries.first()
            && loc.steps().len() <= root.loc.steps().len() + 2
            && loc.steps().starts_with(root.loc.steps())
        {
            let mut j = 1;
            while j < self.entries.len() {
                if self.entries[j].loc == *loc {
                    return Some(j);
                }
                j = self.entries[j].end;
            }
        }
        self.by_loc
            .get_or_init(|| self.entries.iter().enumerate().map(|(i, e)| (e.loc.clone(), i)).collect())
            .get(loc)
            .copied()
    }

    /// The anonymizer's cache look-up: every node but the resource itself
    /// whose type (or element name) is `wanted`, nested resource nodes included.
    pub fn by_type_or_name(&self, wanted: &str, by_type: bool) -> &[usize] {
        let found = if by_type { self.by_type.get(wanted) } else { self.by_name.get(wanted) };
        found.map_or(&[], Vec::as_slice)
    }

    /// The children of entry `i` named `name`.
    pub fn children_named(&self, i: usize, name: &str) -> Vec<usize> {
        (i + 1..self.entries[i].end).filter(|&j| self.entries[j].parent == i && self.entries[j].name == name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wanted() -> Wanted {
        Wanted {
            types: ["HumanName", "Practitioner", "date", "string"].iter().map(|s| s.to_string()).collect(),
            names: ["given"].iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn pre_order_with_subtree_ranges() {
        let doc = json!({
            "resourceType": "Patient",
            "name": [{"family": "F", "given": ["A", "B"]}],
            "contained": [{"resourceType": "Practitioner", "name": [{"family": "P"}]}],
            "birthDate": "1970-01-01"
        });
        let idx = Index::build(&doc, &Location::default(), &wanted()).unwrap();
        let shown: Vec<String> = idx.entries.iter().map(|e| format!("{} {} {}", e.loc, e.ty, e.end)).collect();
        assert_eq!(
            shown,
            [
                " Patient 7",
                "name[0] HumanName 5",
                "name[0].family string 3",
                "name[0].given[0] string 4",
                "name[0].given[1] string 5",
                "contained[0] Practitioner 6",
                "birthDate date 7",
            ]
        );
        assert!(idx.entries[5].nested_resource);
        assert_eq!(idx.by_type_or_name("HumanName", true), [1], "the contained Practitioner's name is not indexed");
        assert_eq!(idx.by_type_or_name("Practitioner", true), [5], "nested resource nodes themselves are");
        assert_eq!(idx.by_type_or_name("given", false), [3, 4]);
        assert_eq!(idx.children_named(1, "given"), [3, 4]);
        assert!(!idx.needs_arrays);
    }

    /// The index types every node as veil-fhirpath's own walk does.
    #[test]
    fn agrees_with_the_fhirpath_walk() {
        let text = include_str!("../../../conformance/ms-anonymizer/resources/patient-special-content.json");
        let doc: Json = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
        let idx = Index::build(&doc, &Location::default(), &Wanted::default()).unwrap();
        let all = veil_fhirpath::Expression::compile("descendants()").unwrap().evaluate(&doc).unwrap();
        let walked: Vec<(String, &str)> =
            all.iter().filter_map(|i| i.as_node()).map(|n| (n.location().to_string(), n.fhir_type())).collect();
        let indexed: Vec<(String, &str)> = idx.entries[1..].iter().map(|e| (e.loc.to_string(), e.ty)).collect();
        assert!(indexed.len() > 20);
        assert_eq!(indexed, walked);
    }

    #[test]
    fn single_values_of_repeating_elements_are_noticed() {
        let doc = json!({"resourceType": "Patient", "name": {"family": "F"}});
        assert!(Index::build(&doc, &Location::default(), &Wanted::default()).unwrap().needs_arrays);
    }
}
