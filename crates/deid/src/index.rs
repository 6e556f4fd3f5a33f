//! A flat, pre-order index of one resource's nodes (not entering nested
//! resources), built once per resource like the anonymizer's type/name
//! cache (ms-anonymizer.md §4.2): `nodesByType('X')` rules become look-ups,
//! and a node's subtree is a contiguous range, so "process the node and every
//! non-resource descendant, skipping visited subtrees" (§4.3) is a loop.

use std::cell::OnceCell;

use rustc_hash::FxHashMap;

use serde_json::Value as Json;
use veil_fhirpath::{Location, Node, node_at};

/// One node of the index.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub loc: Location,
    /// FHIR type name (`date`, `HumanName`, `Patient`); empty if unknown.
    pub ty: &'static str,
    /// Element name (a choice's base name); the model's copy when it has one.
    pub name: std::borrow::Cow<'static, str>,
    /// Index of the parent entry (`usize::MAX` for the first).
    pub parent: usize,
    /// One past the last entry of this node's subtree.
    pub end: usize,
    /// A nested resource (a leaf here; it gets its own index and pass).
    pub nested_resource: bool,
    /// Whether it holds a primitive value.
    pub primitive: bool,
}

pub(crate) struct Index {
    pub entries: Vec<Entry>,
    /// Built on first use: most resources only meet the fast paths.
    by_loc: OnceCell<FxHashMap<Location, usize>>,
}

impl Index {
    /// Indexes the node at `loc` and its descendants, stopping at nested resources.
    pub fn build(doc: &Json, loc: &Location) -> Option<Index> {
        let root = node_at(doc, loc)?;
        let mut entries: Vec<Entry> = Vec::new();
        // (node, parent index); children pushed in reverse for pre-order.
        let mut stack: Vec<(Node<'_>, usize)> = vec![(root, usize::MAX)];
        let mut open: Vec<usize> = Vec::new();
        while let Some((node, parent)) = stack.pop() {
            // Close the subtrees this node is not part of.
            while let Some(&top) = open.last() {
                if top == parent {
                    break;
                }
                entries[top].end = entries.len();
                open.pop();
            }
            let i = entries.len();
            let nested = i > 0 && node.is_resource();
            entries.push(Entry {
                loc: node.location(),
                ty: node.fhir_type(),
                name: match veil_fhir::r4().json_key(node.name()) {
                    Some(k) => k.into(),
                    None => node.name().to_string().into(),
                },
                parent,
                end: i + 1,
                nested_resource: nested,
                primitive: node.is_primitive(),
            });
            if !nested {
                open.push(i);
                for child in node.children().into_iter().rev() {
                    stack.push((child, i));
                }
            }
        }
        let n = entries.len();
        for i in open {
            entries[i].end = n;
        }
        Some(Index { entries, by_loc: OnceCell::new() })
    }

    pub fn position(&self, loc: &Location) -> Option<usize> {
        // A direct child of the resource (`Resource.id`, `Patient.name`) is
        // found among the first level without building the map.
        if let Some(root) = self.entries.first()
            && loc.steps().len() <= root.loc.steps().len() + 2 && loc.steps().starts_with(root.loc.steps()) {
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
    pub fn by_type_or_name(&self, wanted: &str, by_type: bool) -> Vec<usize> {
        (1..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                if by_type { e.ty == wanted } else { e.name == wanted }
            })
            .collect()
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

    #[test]
    fn pre_order_with_subtree_ranges() {
        let doc = json!({
            "resourceType": "Patient",
            "name": [{"family": "F", "given": ["A", "B"]}],
            "contained": [{"resourceType": "Practitioner", "name": [{"family": "P"}]}],
            "birthDate": "1970-01-01"
        });
        let idx = Index::build(&doc, &Location::default()).unwrap();
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
        assert_eq!(idx.children_named(1, "given"), [3, 4]);
    }
}
