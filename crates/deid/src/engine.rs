//! Applying a policy to one resource document (a resource, a Bundle, a
//! resource with contained resources), as the anonymizer does
//! (ms-anonymizer.md §1, §4): resource nodes in pre-order, rules in file
//! order, a visited set shared by the whole document, then security labels
//! and the pruning of emptied nodes.
//!
//! Edits never shift array positions while rules run: a removed value
//! becomes `null` and is pruned at the end, so that every location taken
//! from an evaluation stays valid until then.

use std::collections::HashMap;

use rustc_hash::FxHashSet as HashSet;

use serde_json::{Map, Value as Json};
use veil_fhirpath::{Context, Location, node_at};

use crate::config::{DateShiftScope, Method, Policy, ProcessingErrors, Rule};
use crate::index::{Index, Wanted};
use crate::methods::{self, Keys, Outcome};

/// Why a document could not be de-identified. Messages name rules, element
/// paths and types, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeidError {
    /// The document is not a FHIR resource.
    #[error("not a FHIR resource: {0}")]
    Input(String),
    /// A rule cannot apply here (an unknown method, generalize on a complex
    /// node): an error in the policy, whatever `processingErrors` says.
    #[error("rule {index} (path {path:?}): {reason}")]
    Rule {
        /// The rule's position.
        index: usize,
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Processing failed on a node (a generalize case that does not
    /// evaluate, an Age that is not a whole number); with
    /// `processingErrors: skip` the document becomes an empty resource.
    #[error("rule {index} (path {path:?}) at {element}: {reason}")]
    Processing {
        /// The rule's position.
        index: usize,
        /// Its path.
        path: String,
        /// Where in the resource (`Patient.name[0].family`).
        element: String,
        /// What went wrong.
        reason: String,
    },
}

/// What a method did, for security labels (§4.7, §4.9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Records(u8);

impl Records {
    pub const REDACT: Records = Records(1);
    pub const ABSTRACT: Records = Records(2);
    pub const CRYPTOHASH: Records = Records(4);
    pub const ENCRYPT: Records = Records(8);
    pub const PERTURB: Records = Records(16);
    pub const SUBSTITUTE: Records = Records(32);
    pub const GENERALIZE: Records = Records(64);

    pub fn add(&mut self, other: Records) {
        self.0 |= other.0;
    }
    fn has(self, other: Records) -> bool {
        self.0 & other.0 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const V3: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// The labels in their fixed order and exact spelling (CRYTOHASH sic).
const LABELS: [(Records, Option<&str>, &str, &str); 7] = [
    (Records::REDACT, Some(V3), "REDACTED", "redacted"),
    (Records::ABSTRACT, Some(V3), "ABSTRED", "abstracted"),
    (Records::CRYPTOHASH, Some(V3), "CRYTOHASH", "cryptographic hash function"),
    (Records::ENCRYPT, Some(V3), "MASKED", "masked"),
    (Records::PERTURB, None, "PERTURBED", "exact value is replaced with another exact value"),
    (Records::SUBSTITUTE, None, "SUBSTITUTED", "exact value is replaced with a predefined value"),
    (Records::GENERALIZE, None, "GENERALIZED", "exact value is replaced with a general value"),
];

/// Whether a `Coding` is, exactly, one of the labels de-identification
/// writes into `meta.security` (an audit reads those as vocabulary).
pub fn is_security_label(system: Option<&str>, code: Option<&str>, display: Option<&str>) -> bool {
    LABELS.iter().any(|(_, s, c, d)| *s == system && Some(*c) == code && Some(*d) == display)
}

/// How many nodes each method changed in one document (or many, added up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Changed nodes per method name (`redact`, `dateShift`, …).
    pub changed: std::collections::BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds another document's counts.
    pub fn add(&mut self, other: &Stats) {
        for (k, v) in &other.changed {
            *self.changed.entry(k).or_default() += v;
        }
    }
}

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Redact => "redact",
        Method::DateShift => "dateShift",
        Method::CryptoHash => "cryptoHash",
        Method::Encrypt => "encrypt",
        Method::Substitute { .. } => "substitute",
        Method::Perturb { .. } => "perturb",
        Method::Generalize { .. } => "generalize",
        Method::Keep => "keep",
        Method::Unknown(_) => "unknown",
    }
}

/// A policy ready to run: keys resolved, clock fixed. Cloning keeps the
/// keys, random ones included, so clones produce consistent output.
#[derive(Clone)]
pub struct Engine {
    policy: Policy,
    keys: Keys,
    date_shift_prefix: String,
    /// `dateShiftScope: "patient"`: offsets by the patient each resource belongs to.
    patient_scope: bool,
    /// The types and names the fast-path rules look up.
    wanted: Wanted,
    /// How each rule (by position) finds its nodes.
    plans: Vec<Plan>,
    /// The rules that apply to each resource type, in order.
    applicable: HashMap<&'static str, Vec<usize>>,
}

/// How a rule finds its nodes, decided once per policy.
#[derive(Clone)]
enum Plan {
    /// `nodesByType('X')[.field]` / `nodesByName('x')[.field]`: the index's buckets.
    Fast { wanted: String, by_type: bool, child: Option<String> },
    /// A plain path of element names (`name.given`, `id`) that the R4 model
    /// resolves from the rule's resource type: walked in the index, which is
    /// what FHIRPath would return, without evaluating it.
    Chain(Vec<String>),
    /// The resource itself (`"path": "Patient"`).
    Resource,
    /// Anything else: FHIRPath.
    Expression,
}

fn plan_for(rule: &Rule) -> Plan {
    if let Some((wanted, by_type, child)) = fast_path(&rule.path) {
        return Plan::Fast { wanted: wanted.to_string(), by_type, child: child.map(str::to_string) };
    }
    let Some(expr) = &rule.expression else { return Plan::Resource };
    let src = expr.source();
    let steps: Vec<&str> = src.split('.').collect();
    let plain = steps
        .iter()
        .all(|s| s.starts_with(|c: char| c.is_ascii_lowercase()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
    if !plain {
        return Plan::Expression;
    }
    let model = veil_fhir::r4();
    let mut owner: &str = match rule.resource_type.as_str() {
        "" => return Plan::Expression,
        t => t,
    };
    for (i, step) in steps.iter().enumerate() {
        // Only names the model defines (no choice variants), never through a
        // nested resource (`contained.id` would need FHIRPath's walk into it).
        let Some(el) = model.child(owner, step) else { return Plan::Expression };
        let last = i + 1 == steps.len();
        if el.types.contains(&"Resource") || (el.is_choice() && !last) {
            return Plan::Expression;
        }
        owner = el.children_owner(el.types[0]);
    }
    Plan::Chain(steps.iter().map(|s| s.to_string()).collect())
}

impl Engine {
    /// Prepares a policy. Missing keys become random ones, as in the
    /// anonymizer: outputs then differ from run to run.
    pub fn new(policy: Policy) -> Engine {
        let mut keys = Keys::from_parameters(&policy.parameters);
        keys.exact_date_shift = policy.exact_date_shift;
        keys.date_shift_to_utc = policy.date_shift_to_utc;
        let patient_scope = policy.parameters.date_shift_scope == Some(DateShiftScope::Patient);
        let mut wanted = Wanted::default();
        for rule in &policy.rules {
            if let Some((name, by_type, _)) = fast_path(&rule.path) {
                if by_type { &mut wanted.types } else { &mut wanted.names }.insert(name.to_string());
            }
        }
        let plans = policy.rules.iter().map(plan_for).collect();
        let applicable = veil_fhir::r4()
            .resource_types()
            .map(|ty| (ty, policy.rules.iter().filter(|r| applies(r, ty)).map(|r| r.index).collect()))
            .collect();
        Engine { policy, keys, date_shift_prefix: String::new(), patient_scope, wanted, plans, applicable }
    }

    /// The date-shift prefix for the `file` and `folder` scopes: the input
    /// file's name or the input folder's last segment (§5.2).
    pub fn with_date_shift_prefix(mut self, prefix: &str) -> Engine {
        self.date_shift_prefix = match self.policy.parameters.date_shift_scope {
            Some(DateShiftScope::File) | Some(DateShiftScope::Folder) => prefix.to_string(),
            _ => String::new(),
        };
        self
    }

    /// Fixes "today" for the over-89 rule (tests, reproducible runs).
    pub fn with_today(mut self, year: i32, month: u32, day: u32) -> Engine {
        self.keys.today = (year, month, day);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// De-identifies one document. With `processingErrors: skip`, a
    /// processing failure gives the anonymizer's empty resource of the root
    /// type, labelled REDACTED.
    pub fn anonymize(&self, doc: Json) -> Result<Json, DeidError> {
        self.anonymize_counted(doc).map(|(d, _)| d)
    }

    /// Like [`Engine::anonymize`], also counting the nodes each method changed.
    pub fn anonymize_counted(&self, mut doc: Json) -> Result<(Json, Stats), DeidError> {
        let mut stats = Stats::default();
        let root_type = doc
            .get("resourceType")
            .and_then(Json::as_str)
            .filter(|t| veil_fhir::r4().is_resource_type(t))
            .ok_or_else(|| DeidError::Input("no known resourceType".into()))?
            .to_string();
        match self.run(&mut doc, &mut stats) {
            Ok(()) => Ok((doc, stats)),
            Err(DeidError::Processing { .. }) if self.policy.processing_errors == ProcessingErrors::Skip => {
                let mut empty = Map::new();
                empty.insert("resourceType".into(), Json::String(root_type));
                let mut meta = Map::new();
                meta.insert("security".into(), Json::Array(vec![label(Records::REDACT)]));
                empty.insert("meta".into(), Json::Object(meta));
                Ok((Json::Object(empty), Stats::default()))
            }
            Err(e) => Err(e),
        }
    }

    fn run(&self, doc: &mut Json, stats: &mut Stats) -> Result<(), DeidError> {
        // Nodes an earlier rule processed: bits per index for the resource at
        // hand, and locations for what crosses indexes (an outer rule reaching
        // into a nested resource, a subtree reshaped by substitute).
        let mut visited: HashSet<Location> = HashSet::default();
        // Resource nodes in pre-order: (location, type, in `contained`, enclosing resource).
        let mut resources: Vec<(Location, &'static str, bool, Option<usize>)> = Vec::new();
        let mut records: Vec<Records> = Vec::new();
        let mut pending = vec![(Location::default(), false, None)];
        while let Some((loc, contained, parent)) = pending.pop() {
            let Some(mut index) = Index::build(doc, &loc, &self.wanted) else { continue };
            if let Some(at) = &index.unknown {
                // The element's name is FHIR structure, not patient data.
                let ty = index.entries[0].ty;
                return Err(DeidError::Input(format!("{ty}.{at}: not an element of FHIR R4")));
            }
            if index.needs_arrays {
                crate::shape::normalize_arrays(doc);
                index = Index::build(doc, &loc, &self.wanted).expect("the resource is still there");
            }
            let ri = resources.len();
            let ty = index.entries[0].ty;
            resources.push((loc.clone(), ty, contained, parent));
            records.push(Records::default());
            // Its nested resources come next, in document order.
            let nested: Vec<_> = index
                .entries
                .iter()
                .filter(|e| e.nested_resource)
                .map(|e| (e.loc.clone(), e.name == "contained", Some(ri)))
                .collect();
            pending.extend(nested.into_iter().rev());

            // Read before any rule runs, so hashing ids cannot change it.
            let prefix = if self.patient_scope {
                node_at(doc, &loc)
                    .and_then(|n| {
                        veil_fhirpath::compartment::patients_of(doc, veil_fhirpath::Item::Node(n)).into_iter().next()
                    })
                    .unwrap_or_default()
            } else {
                self.date_shift_prefix.clone()
            };
            for &ri_rule in self.applicable.get(ty).map_or(&[][..], Vec::as_slice) {
                let rule = &self.policy.rules[ri_rule];
                if let Method::Unknown(m) = &rule.method {
                    return Err(DeidError::Rule {
                        index: rule.index,
                        path: rule.path.clone(),
                        reason: format!("Anonymization method {} not supported.", m.to_uppercase()),
                    });
                }
                let matches = self.matches(doc, &index, &loc, rule)?;
                let mut restructured = false;
                for target in matches {
                    let outcome = self.process(doc, &mut index, target, rule, &prefix, &mut visited)?;
                    records[ri].add(outcome.records);
                    restructured |= outcome.restructured;
                    if outcome.changed > 0 {
                        *stats.changed.entry(method_name(&rule.method)).or_default() += outcome.changed;
                    }
                }
                if restructured {
                    // substitute reshaped a subtree: later rules see the new
                    // tree, and what was visited stays visited by location.
                    remember_visited(&index, &mut visited);
                    index = Index::build(doc, &loc, &self.wanted).expect("the resource is still there");
                }
            }
        }
        // Nested results roll up into the resources that contain them (§4.9).
        for i in (1..resources.len()).rev() {
            if let Some(p) = resources[i].3 {
                let r = records[i];
                records[p].add(r);
            }
        }
        for (i, (loc, _, contained, _)) in resources.iter().enumerate() {
            if !*contained
                && !records[i].is_empty()
                && let Some(resource) = loc.get_mut(doc).and_then(Json::as_object_mut)
            {
                add_labels(resource, records[i]);
            }
        }
        prune(doc);
        Ok(())
    }

    /// The nodes a rule selects in one resource (§4.2): the fast paths over
    /// the index, the resource itself, or the expression's node results.
    fn matches(&self, doc: &Json, index: &Index, loc: &Location, rule: &Rule) -> Result<Vec<Target>, DeidError> {
        match &self.plans[rule.index] {
            Plan::Fast { wanted, by_type, child } => {
                let mut out = Vec::new();
                for &i in index.by_type_or_name(wanted, *by_type) {
                    match child {
                        None => out.push(Target::Indexed(i)),
                        Some(name) if !index.entries[i].nested_resource => {
                            out.extend(index.children_named(i, name).into_iter().map(Target::Indexed));
                        }
                        Some(_) => {} // a field of a nested resource: left to that resource's own rules
                    }
                }
                return Ok(out);
            }
            Plan::Chain(steps) => {
                let mut current = vec![0];
                for step in steps {
                    current = current.into_iter().flat_map(|i| index.children_named(i, step)).collect();
                    // Names the model does not know under a known type are
                    // not FHIRPath nodes (FHIRPath would find nothing there).
                    current.retain(|&i| !index.entries[i].ty.is_empty() || index.entries[i].nested_resource);
                }
                return Ok(current.into_iter().map(Target::Indexed).collect());
            }
            Plan::Resource => return Ok(vec![Target::Indexed(0)]),
            Plan::Expression => {}
        }
        let Some(expr) = &rule.expression else { return Ok(vec![Target::Indexed(0)]) };
        let focus = node_at(doc, loc).expect("the resource is still there");
        let ctx = Context::new(doc).with_focus(vec![veil_fhirpath::Item::Node(focus)]);
        let items = expr.evaluate_with(&ctx).map_err(|e| DeidError::Rule {
            index: rule.index,
            path: rule.path.clone(),
            reason: format!("cannot evaluate: {e}"),
        })?;
        // Computed values (`name.family.substring(0,1)`) are not nodes: nothing to change.
        Ok(items
            .iter()
            .filter_map(|i| i.as_node())
            .map(|n| {
                let l = n.location();
                match index.position(&l) {
                    Some(i) => Target::Indexed(i),
                    None => Target::Elsewhere(l),
                }
            })
            .collect())
    }

    /// Applies a rule to a node and its non-resource descendants (§4.3).
    fn process(
        &self,
        doc: &mut Json,
        index: &mut Index,
        target: Target,
        rule: &Rule,
        prefix: &str,
        visited: &mut HashSet<Location>,
    ) -> Result<methods::Applied, DeidError> {
        let start = match target {
            Target::Indexed(i) => i,
            Target::Elsewhere(loc) => {
                // A node inside a nested resource, reached by an outer rule:
                // its marks must outlive this index, so they go by location.
                let mut own = match Index::build_subtree(doc, &loc, &self.wanted) {
                    Some(idx) => idx,
                    None => return Ok(methods::Applied::default()),
                };
                let applied = self.process_range(doc, &mut own, 0, rule, prefix, visited)?;
                remember_visited(&own, visited);
                return Ok(applied);
            }
        };
        self.process_range(doc, index, start, rule, prefix, visited)
    }

    fn process_range(
        &self,
        doc: &mut Json,
        index: &mut Index,
        start: usize,
        rule: &Rule,
        prefix: &str,
        visited: &mut HashSet<Location>,
    ) -> Result<methods::Applied, DeidError> {
        let mut applied = methods::Applied::default();
        let end = index.entries[start].end;
        let check_global = !visited.is_empty();
        let mut j = start;
        while j < end {
            let entry = &index.entries[j];
            let seen = index.visited[j] || (check_global && visited.contains(&entry.loc));
            if seen || (j != start && entry.nested_resource) {
                j = entry.end;
                continue;
            }
            if matches!(rule.method, Method::Substitute { .. } | Method::Perturb { .. }) {
                // These look at what earlier rules did below the node.
                for k in j..entry.end {
                    if index.visited[k] {
                        visited.insert(index.entries[k].loc.clone());
                    }
                }
            }
            let parent_ty = index.entries.get(entry.parent).map_or("", |p| p.ty);
            let outcome = methods::apply(
                &rule.method,
                doc,
                entry,
                parent_ty,
                &self.keys,
                prefix,
                &self.policy.parameters,
                visited,
            )
            .map_err(|e| match e {
                methods::Failure::Rule(reason) => {
                    DeidError::Rule { index: rule.index, path: rule.path.clone(), reason }
                }
                methods::Failure::Processing(reason) => DeidError::Processing {
                    index: rule.index,
                    path: rule.path.clone(),
                    element: entry.loc.to_string(),
                    reason,
                },
            })?;
            index.visited[j] = true;
            if !outcome.records.is_empty() {
                applied.changed += 1;
            }
            applied.records.add(outcome.records);
            match outcome.outcome {
                Outcome::Continue => j += 1,
                Outcome::SubtreeDone { restructured } => {
                    // The method handled the whole subtree, which is now visited.
                    applied.restructured |= restructured;
                    let subtree_end = index.entries[j].end;
                    for v in &mut index.visited[j + 1..subtree_end] {
                        *v = true;
                    }
                    j = subtree_end;
                }
            }
        }
        Ok(applied)
    }
}

/// Carries an index's visited marks over to the location set.
fn remember_visited(index: &Index, visited: &mut HashSet<Location>) {
    for (e, seen) in index.entries.iter().zip(&index.visited) {
        if *seen {
            visited.insert(e.loc.clone());
        }
    }
}

enum Target {
    Indexed(usize),
    Elsewhere(Location),
}

/// Whether a rule scoped to `rule.resource_type` applies to a resource of type `ty` (§4.1).
fn applies(rule: &Rule, ty: &str) -> bool {
    // DomainResource applies to Bundle, Binary and Parameters too (as in the anonymizer).
    matches!(rule.resource_type.as_str(), "" | "Resource" | "DomainResource") || rule.resource_type == ty
}

/// `nodesByType('X')` / `nodesByName('x')`, optionally with `.field`, as
/// the whole path: answered from the index (§4.2 a, b).
fn fast_path(path: &str) -> Option<(&str, bool, Option<&str>)> {
    let (by_type, rest) = if let Some(r) = path.strip_prefix("nodesByType(") {
        (true, r)
    } else {
        (false, path.strip_prefix("nodesByName(")?)
    };
    let quote = |c: char| matches!(c, '\'' | '"' | '|');
    let rest = rest.strip_prefix(quote)?;
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
    let (wanted, rest) = rest.split_at(end);
    let rest = rest.strip_prefix(quote)?.strip_prefix(')')?;
    if wanted.is_empty() {
        return None;
    }
    match rest {
        "" => Some((wanted, by_type, None)),
        r => {
            let field = r.strip_prefix('.')?;
            (!field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric())).then_some((
                wanted,
                by_type,
                Some(field),
            ))
        }
    }
}

fn label(r: Records) -> Json {
    static BUILT: std::sync::OnceLock<Vec<(Records, Json)>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| LABELS.iter().map(|l| (l.0, build_label(l.0))).collect());
    built.iter().find(|(k, _)| *k == r).map(|(_, j)| j.clone()).expect("a label")
}

fn build_label(r: Records) -> Json {
    let (_, system, code, display) = LABELS.iter().find(|l| l.0 == r).expect("a label");
    let mut m = Map::new();
    if let Some(s) = system {
        m.insert("system".into(), Json::String((*s).into()));
    }
    m.insert("code".into(), Json::String((*code).into()));
    m.insert("display".into(), Json::String((*display).into()));
    Json::Object(m)
}

/// Appends the labels for `records` to `meta.security`, skipping codes
/// already there; a new `meta` goes last (§4.9).
fn add_labels(resource: &mut Map<String, Json>, records: Records) {
    let meta = resource.entry("meta").or_insert_with(|| Json::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
    let security = meta.entry("security").or_insert_with(|| Json::Array(Vec::new()));
    let Some(security) = security.as_array_mut() else { return };
    for (r, ..) in LABELS {
        if !records.has(r) {
            continue;
        }
        let code = LABELS.iter().find(|l| l.0 == r).map_or("", |l| l.2);
        let present =
            security.iter().any(|c| c.get("code").and_then(Json::as_str).is_some_and(|x| x.eq_ignore_ascii_case(code)));
        if !present {
            security.push(label(r));
        }
    }
    // Firely writes Meta's elements in canonical order.
    const ORDER: [&str; 6] = ["versionId", "lastUpdated", "source", "profile", "security", "tag"];
    let mut sorted = Map::new();
    for k in ORDER {
        if let Some(v) = meta.shift_remove(k) {
            sorted.insert(k.to_string(), v);
        }
    }
    sorted.append(meta);
    *meta = sorted;
}

/// Removes what processing emptied, bottom-up (§4.8): null values, and
/// objects and arrays with nothing left, keeping resources (which always
/// keep their `resourceType`) and a primitive's `_` companion while it
/// carries anything. Works in place: nothing is copied.
pub(crate) fn prune(v: &mut Json) {
    match v {
        Json::Object(map) => {
            for child in map.values_mut() {
                prune(child);
            }
            // Arrays paired with a `_` companion array lose their positions together.
            let has_companions = map.keys().any(|k| k.starts_with('_'));
            let paired: Vec<String> = if !has_companions {
                Vec::new()
            } else {
                map.iter()
                    .filter(|(k, v)| !k.starts_with('_') && v.is_array())
                    .filter(|(k, _)| map.get(&format!("_{k}")).is_some_and(Json::is_array))
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            for k in paired {
                let companion = format!("_{k}");
                let Some(Json::Array(ext)) = map.shift_remove(&companion) else { continue };
                let Some(Json::Array(items)) = map.get_mut(&k) else { continue };
                let mut kept_ext = Vec::with_capacity(items.len());
                let mut ext = ext.into_iter();
                items.retain(|item| {
                    let e = ext.next().unwrap_or(Json::Null);
                    let keep = !is_empty(item) || !is_empty(&e);
                    if keep {
                        kept_ext.push(e);
                    }
                    keep
                });
                if kept_ext.iter().any(|e| !is_empty(e)) {
                    map.insert(companion, Json::Array(kept_ext));
                }
            }
            map.retain(|_, v| {
                if let Json::Array(items) = v {
                    items.retain(|item| !is_empty(item));
                }
                !is_empty(v)
            });
        }
        Json::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Object(m) => m.is_empty(),
        Json::Array(a) => a.iter().all(is_empty),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule a built-in policy resolves through the index
    /// (`Plan::Chain`) selects exactly what FHIRPath selects, on the bundled
    /// Synthea resources.
    #[test]
    fn index_plans_agree_with_fhirpath() {
        let mut chains = 0;
        for (name, _) in crate::config::BUILT_IN {
            let engine = Engine::new(Policy::built_in(name).unwrap());
            chains += engine.plans.iter().filter(|p| matches!(p, Plan::Chain(_))).count();
            index_plans_agree_with_fhirpath_for(&engine);
        }
        assert!(chains > 100, "{chains} rules use the index walk");
    }

    fn index_plans_agree_with_fhirpath_for(engine: &Engine) {
        use std::io::Read;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
        let mut checked = 0;
        for entry in archive.entries().unwrap().take(12) {
            let mut text = String::new();
            entry.unwrap().read_to_string(&mut text).unwrap();
            let bundle: Json = serde_json::from_str(&text).unwrap();
            for e in bundle["entry"].as_array().into_iter().flatten() {
                let doc = e["resource"].clone();
                let index = Index::build(&doc, &Location::default(), &engine.wanted).unwrap();
                let ty = index.entries[0].ty;
                for rule in engine.policy.rules.iter().filter(|r| applies(r, ty)) {
                    if !matches!(engine.plans[rule.index], Plan::Chain(_)) {
                        continue;
                    }
                    let by_index: Vec<String> = engine
                        .matches(&doc, &index, &Location::default(), rule)
                        .unwrap()
                        .into_iter()
                        .map(|t| match t {
                            Target::Indexed(i) => index.entries[i].loc.to_string(),
                            Target::Elsewhere(l) => l.to_string(),
                        })
                        .collect();
                    let ctx = Context::new(&doc);
                    let by_fhirpath: Vec<String> = rule
                        .expression
                        .as_ref()
                        .unwrap()
                        .evaluate_with(&ctx)
                        .unwrap()
                        .iter()
                        .filter_map(|i| i.as_node().map(|n| n.location().to_string()))
                        .collect();
                    assert_eq!(by_index, by_fhirpath, "rule {} ({}) on {ty}", rule.index, rule.path);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked} comparisons");
    }
}
