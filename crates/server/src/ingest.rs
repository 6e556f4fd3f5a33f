//! Loading resources into the store: transaction and batch Bundles (the
//! Synthea sample loads as it is) and NDJSON, with Patient compartment and
//! Group membership computed on the way in.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;
use veil_fhirpath::{Context, Expression, compartment};
use veil_store::{Store, Write};

/// Why something could not be loaded. Messages name entries and lines, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Not a resource Veil can store.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] veil_store::StoreError),
}

/// Resources written per type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// New resources per resourceType.
    pub created: BTreeMap<String, u64>,
    /// Resources given a new version per resourceType (a different body).
    pub updated: BTreeMap<String, u64>,
    /// Resources the store held with the same body already, per
    /// resourceType (a resource repeated in the input counts here from its
    /// second time on).
    pub unchanged: BTreeMap<String, u64>,
    /// Deleted per resourceType (`DELETE` entries).
    pub deleted: BTreeMap<String, u64>,
    /// Each written resource as `Type/id/_history/version`, in order.
    pub locations: Vec<String>,
}

impl LoadReport {
    /// Adds another report's counts.
    pub fn add(&mut self, other: &LoadReport) {
        for (mine, theirs) in [
            (&mut self.created, &other.created),
            (&mut self.updated, &other.updated),
            (&mut self.unchanged, &other.unchanged),
            (&mut self.deleted, &other.deleted),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
        self.locations.extend(other.locations.iter().cloned());
    }
}

/// A new resource id: 32 random hex characters.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    veil_util::hex::encode(&bytes)
}

fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Rewrites every `"reference": "<fullUrl>"` that names an entry of the
/// Bundle to the entry's `Type/id`.
fn rewrite_references(v: &mut Json, by_full_url: &HashMap<String, String>) {
    match v {
        Json::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "reference" {
                    if let Json::String(r) = child
                        && let Some(local) = by_full_url.get(r.as_str())
                    {
                        *r = local.clone();
                    }
                } else {
                    rewrite_references(child, by_full_url);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|i| rewrite_references(i, by_full_url)),
        _ => {}
    }
}

/// A resource prepared for the store.
struct Prepared {
    resource_type: String,
    id: String,
    body: String,
    patients: Vec<String>,
    group_members: Option<Vec<String>>,
}

fn group_member_expr() -> &'static Expression {
    static E: std::sync::OnceLock<Expression> = std::sync::OnceLock::new();
    E.get_or_init(|| Expression::compile("Group.member.entity.reference").expect("valid"))
}

fn prepare(resource: Json, what: &dyn Fn() -> String) -> Result<Prepared, LoadError> {
    let ty = resource
        .get("resourceType")
        .and_then(Json::as_str)
        .filter(|t| veil_fhir::r4().is_resource_type(t) && !matches!(*t, "Resource" | "DomainResource"))
        .ok_or_else(|| LoadError::Invalid(format!("{}: no known resourceType", what())))?
        .to_string();
    let id = resource
        .get("id")
        .and_then(Json::as_str)
        .filter(|id| is_valid_id(id))
        .ok_or_else(|| LoadError::Invalid(format!("{}: {ty} without a valid id", what())))?
        .to_string();
    let patients = compartment::patients_of_resource(&resource);
    let group_members = (ty == "Group").then(|| {
        group_member_expr()
            .evaluate_with(&Context::new(&resource))
            .unwrap_or_default()
            .iter()
            .filter_map(|i| {
                i.value().and_then(|v| if let veil_fhirpath::Value::String(s) = v { Some(s) } else { None })
            })
            .filter_map(|r| compartment::patient_id_of_reference(&r).map(str::to_string))
            .collect()
    });
    Ok(Prepared { resource_type: ty, id, body: resource.to_string(), patients, group_members })
}

fn write(store: &dyn Store, prepared: &[Prepared], report: &mut LoadReport) -> Result<(), LoadError> {
    let writes: Vec<Write<'_>> = prepared
        .iter()
        .map(|p| Write {
            resource_type: &p.resource_type,
            id: &p.id,
            body: &p.body,
            patients: &p.patients,
            group_members: p.group_members.as_deref(),
        })
        .collect();
    for veil_store::Written { stored, change } in store.put(&writes)? {
        let counts = match change {
            veil_store::Change::Created => &mut report.created,
            veil_store::Change::Updated => &mut report.updated,
            veil_store::Change::Unchanged => &mut report.unchanged,
        };
        *counts.entry(stored.resource_type.clone()).or_default() += 1;
        report.locations.push(format!("{}/{}/_history/{}", stored.resource_type, stored.id, stored.version));
    }
    Ok(())
}

/// Whether `doc` is a Bundle that [`load_document`] unpacks.
fn is_transaction_or_batch(doc: &Json) -> bool {
    doc.get("resourceType").and_then(Json::as_str) == Some("Bundle")
        && matches!(doc.get("type").and_then(Json::as_str), Some("transaction" | "batch"))
}

/// Stores `doc` as the one resource it is, whatever it holds: a Bundle of
/// any type too (FHIR's `POST /Bundle` stores a Bundle; only the base URL
/// processes transactions). An id is assigned when it has none.
pub fn store_resource(store: &dyn Store, mut doc: Json, name: &str) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    if doc.get("id").is_none() {
        doc["id"] = Json::String(new_id());
    }
    let p = prepare(doc, &|| name.to_string())?;
    write(store, &[p], &mut report)?;
    Ok(report)
}

/// What one entry of a transaction or batch asks to do, for checking it
/// against the caller's scopes before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAction {
    /// The resource type the entry touches.
    pub resource_type: String,
    /// The interactions it needs: `c` create, `u` update, `d` delete.
    pub needs: &'static [char],
}

/// The action of every entry of a transaction or batch Bundle, in order,
/// or why an entry cannot be read as one (naming its index). An entry's
/// type comes from what it writes and from its request URL, and both must
/// agree: a default never stands in for a missing type.
pub fn entry_actions(bundle: &Json) -> Result<Vec<EntryAction>, String> {
    let mut actions = Vec::new();
    for (i, entry) in bundle.get("entry").and_then(Json::as_array).into_iter().flatten().enumerate() {
        let method = entry.pointer("/request/method").and_then(Json::as_str).unwrap_or("PUT").to_ascii_uppercase();
        let url_type = entry
            .pointer("/request/url")
            .and_then(Json::as_str)
            .map(|u| u.split(['/', '?']).next().unwrap_or("").to_string())
            .filter(|t| !t.is_empty());
        let body_type = entry.pointer("/resource/resourceType").and_then(Json::as_str).map(str::to_string);
        let resource_type = match (&method[..], body_type, url_type) {
            ("DELETE", _, Some(t)) => t,
            ("POST" | "PUT", Some(b), Some(u)) if b == u => b,
            ("POST" | "PUT", Some(b), None) => b,
            ("POST" | "PUT", Some(_), Some(_)) => {
                return Err(format!("entry {i}: the resource's type differs from its request URL's"));
            }
            ("POST" | "PUT", None, _) => return Err(format!("entry {i}: {method} without a resource")),
            ("DELETE", _, None) => return Err(format!("entry {i}: DELETE needs a request URL Type/id")),
            _ => return Err(format!("entry {i}: the method {method} is not supported in a transaction or batch")),
        };
        if !veil_fhir::r4().is_resource_type(&resource_type)
            || matches!(resource_type.as_str(), "Resource" | "DomainResource")
        {
            return Err(format!("entry {i}: not a FHIR R4 resource type"));
        }
        // Entries are stored by their id (a POST's own, or its urn:uuid
        // fullUrl's), replacing what is there: any write may create or
        // update, so it needs both.
        let needs: &'static [char] = if method == "DELETE" { &['d'] } else { &['c', 'u'] };
        actions.push(EntryAction { resource_type, needs });
    }
    Ok(actions)
}

/// Loads one document: a transaction or batch Bundle is unpacked (entries'
/// `fullUrl` references rewritten to `Type/id`, ids assigned where missing,
/// `DELETE` requests applied); any other resource is stored as it is.
/// A transaction's entries are written in one store transaction.
pub fn load_document(store: &dyn Store, mut doc: Json, name: &str) -> Result<LoadReport, LoadError> {
    if !is_transaction_or_batch(&doc) {
        return store_resource(store, doc, name);
    }
    let mut report = LoadReport::default();
    let Some(Json::Array(entries)) = doc.get_mut("entry").map(Json::take) else { return Ok(report) };
    // First pass: ids, and the map from fullUrl to Type/id.
    let mut by_full_url = HashMap::new();
    let mut resources = Vec::new();
    let mut deletes = Vec::new();
    for (i, mut entry) in entries.into_iter().enumerate() {
        let method = entry.pointer("/request/method").and_then(Json::as_str).unwrap_or("PUT").to_ascii_uppercase();
        if method == "DELETE" {
            let url = entry.pointer("/request/url").and_then(Json::as_str).unwrap_or("");
            let mut parts = url.split('/');
            match (parts.next(), parts.next()) {
                (Some(t), Some(id)) if !t.is_empty() && !id.is_empty() => deletes.push((t.to_string(), id.to_string())),
                _ => return Err(LoadError::Invalid(format!("{name}: entry {i}: DELETE needs a url Type/id"))),
            }
            continue;
        }
        let Some(mut resource) = entry.get_mut("resource").map(Json::take) else { continue };
        let full_url = entry.get("fullUrl").and_then(Json::as_str).map(str::to_string);
        let ty = resource.get("resourceType").and_then(Json::as_str).unwrap_or("").to_string();
        if resource.get("id").and_then(Json::as_str).is_none() {
            // A transaction's urn:uuid fullUrl becomes the id, so references stay readable.
            let id = full_url
                .as_deref()
                .and_then(|u| u.strip_prefix("urn:uuid:"))
                .filter(|u| is_valid_id(u))
                .map_or_else(new_id, str::to_string);
            resource["id"] = Json::String(id);
        }
        if let (Some(url), Some(id)) = (full_url, resource.get("id").and_then(Json::as_str)) {
            by_full_url.insert(url, format!("{ty}/{id}"));
        }
        resources.push((i, resource));
    }
    let mut prepared = Vec::with_capacity(resources.len());
    for (i, mut resource) in resources {
        rewrite_references(&mut resource, &by_full_url);
        prepared.push(prepare(resource, &|| format!("{name}: entry {i}"))?);
    }
    write(store, &prepared, &mut report)?;
    for (t, id) in deletes {
        if store.delete(&t, &id)?.is_some() {
            *report.deleted.entry(t).or_default() += 1;
        }
    }
    Ok(report)
}

/// Loads NDJSON, one resource per line, in batches of `batch` lines (one
/// store transaction each). Errors name the line.
pub fn load_ndjson(
    store: &dyn Store,
    input: impl std::io::BufRead,
    name: &str,
    batch: usize,
) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    let mut pending = Vec::with_capacity(batch);
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| LoadError::Invalid(format!("{name}:{}: cannot read ({e})", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: Json = serde_json::from_str(&line)
            .map_err(|e| LoadError::Invalid(format!("{name}:{}: not valid JSON (column {})", i + 1, e.column())))?;
        pending.push(prepare(doc, &|| format!("{name}:{}", i + 1))?);
        if pending.len() >= batch {
            write(store, &pending, &mut report)?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        write(store, &pending, &mut report)?;
    }
    Ok(report)
}
