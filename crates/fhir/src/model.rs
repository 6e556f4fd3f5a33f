//! Indexes over the generated tables, built once.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::OnceLock;

use crate::r4::{self, RawElement};

/// One element of the R4 model, such as `Patient.name` or `Observation.value`.
#[derive(Debug)]
pub struct Element {
    /// The full path, e.g. `Patient.contact.name`.
    pub path: &'static str,
    /// The element's name as FHIRPath sees it: the last path step, and for a
    /// choice element its base name (`value`, not `valueQuantity`).
    pub name: &'static str,
    /// The FHIR type codes it may hold: one, or several for a choice element.
    /// Backbone elements are `BackboneElement` (or `Element` inside data
    /// types, such as `Timing.repeat`).
    pub types: &'static [&'static str],
    /// Whether the element repeats (cardinality `..*`).
    pub repeats: bool,
    /// For a content reference (`Questionnaire.item.item`), the path whose
    /// definition it reuses (`Questionnaire.item`).
    pub content_ref: Option<&'static str>,
}

impl Element {
    /// Whether this is a choice element (`value[x]`).
    pub fn is_choice(&self) -> bool {
        self.types.len() > 1
    }

    /// The key under which the children of a node of type `ty` held by this
    /// element are defined: the backbone path for backbone elements and
    /// content references, the type name otherwise.
    pub fn children_owner(&self, ty: &'static str) -> &'static str {
        if let Some(target) = self.content_ref {
            return target;
        }
        match ty {
            "BackboneElement" | "Element" => self.path,
            _ => ty,
        }
    }

    /// For a choice element, the type that a JSON key such as
    /// `valueQuantity` holds (`Quantity`); `None` when the key is not one of
    /// this element's variants.
    pub fn choice_type_of_key(&self, key: &str) -> Option<&'static str> {
        let suffix = key.strip_prefix(self.name)?;
        self.types.iter().copied().find(|t| type_suffix_eq(t, suffix))
    }

    /// The JSON key holding a value of type `ty` for this element:
    /// `valueQuantity` for a choice, the plain name otherwise.
    pub fn json_key(&self, ty: &str) -> String {
        if !self.is_choice() {
            return self.name.to_string();
        }
        let mut key = String::with_capacity(self.name.len() + ty.len());
        key.push_str(self.name);
        let mut chars = ty.chars();
        if let Some(first) = chars.next() {
            key.extend(first.to_uppercase());
            key.push_str(chars.as_str());
        }
        key
    }
}

/// `Quantity` matches suffix `Quantity`, `dateTime` matches `DateTime`.
fn type_suffix_eq(ty: &str, suffix: &str) -> bool {
    let (Some(a), Some(b)) = (ty.chars().next(), suffix.chars().next()) else {
        return false;
    };
    ty.len() == suffix.len() && a.to_ascii_uppercase() == b && ty[1..] == suffix[1..]
}

/// The type of a search parameter (the R4 `SearchParamType` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SearchParamKind {
    /// `number`
    Number,
    /// `date`
    Date,
    /// `string`
    String,
    /// `token`
    Token,
    /// `reference`
    Reference,
    /// `composite`
    Composite,
    /// `quantity`
    Quantity,
    /// `uri`
    Uri,
    /// `special`
    Special,
}

impl SearchParamKind {
    fn parse(code: &str) -> SearchParamKind {
        match code {
            "number" => SearchParamKind::Number,
            "date" => SearchParamKind::Date,
            "string" => SearchParamKind::String,
            "token" => SearchParamKind::Token,
            "reference" => SearchParamKind::Reference,
            "composite" => SearchParamKind::Composite,
            "quantity" => SearchParamKind::Quantity,
            "uri" => SearchParamKind::Uri,
            _ => SearchParamKind::Special,
        }
    }
}

/// One R4 search parameter, for one base resource type.
#[derive(Debug)]
pub struct SearchParam {
    /// The resource type it searches (`Patient`, or `Resource` / `DomainResource` for common ones).
    pub base: &'static str,
    /// The name used in a query (`birthdate`, `_lastUpdated`).
    pub code: &'static str,
    /// Its type.
    pub kind: SearchParamKind,
    /// Its FHIRPath expression as published (may cover several bases, `A.x | B.y`).
    pub expression: &'static str,
    /// For reference parameters, the resource types it may point to.
    pub targets: &'static [&'static str],
}

/// The R4 model: look-ups over elements, types, search parameters and the Patient compartment.
pub struct Model {
    children: HashMap<&'static str, HashMap<&'static str, Element>>,
    by_path: HashMap<&'static str, (&'static str, &'static str)>,
    parents: HashMap<&'static str, &'static str>,
    resources: HashSet<&'static str>,
    type_names: HashSet<&'static str>,
    search: Vec<SearchParam>,
    compartment: HashMap<&'static str, &'static [&'static str]>,
    required: HashMap<&'static str, &'static [&'static str]>,
    json_keys: HashSet<&'static str>,
}

/// The R4 model, built on first use (a few milliseconds) and shared.
pub fn r4() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(Model::build)
}

impl Model {
    fn build() -> Model {
        let mut children: HashMap<&'static str, HashMap<&'static str, Element>> = HashMap::default();
        let mut by_path = HashMap::default();
        let mut type_names: HashSet<&'static str> = HashSet::default();
        for RawElement { path, types, repeats, content_ref } in r4::ELEMENTS {
            let (owner, name) = path.rsplit_once('.').expect("generated paths have an owner");
            type_names.extend(types.iter().copied());
            children
                .entry(owner)
                .or_default()
                .insert(name, Element { path, name, types, repeats: *repeats, content_ref: *content_ref });
            by_path.insert(*path, (owner, name));
        }
        for (t, p) in r4::TYPE_PARENTS {
            type_names.insert(t);
            type_names.insert(p);
        }
        type_names.extend(r4::RESOURCE_TYPES.iter().copied());
        let search = r4::SEARCH_PARAMS
            .iter()
            .map(|p| SearchParam {
                base: p.base,
                code: p.code,
                kind: SearchParamKind::parse(p.kind),
                expression: p.expression,
                targets: p.targets,
            })
            .collect();
        // Every property name FHIR JSON can use: element names, choice
        // variants (`valueQuantity`) and primitive companions (`_birthDate`).
        // Built once and leaked, so locations can refer to them for free.
        let mut json_keys: HashSet<&'static str> = HashSet::default();
        for owner in children.values() {
            for el in owner.values() {
                json_keys.insert(el.name);
                let mut variants: Vec<String> = vec![format!("_{}", el.name)];
                if el.is_choice() {
                    for t in el.types {
                        let key = el.json_key(t);
                        variants.push(format!("_{key}"));
                        variants.push(key);
                    }
                }
                for v in variants {
                    if !json_keys.contains(v.as_str()) {
                        json_keys.insert(Box::leak(v.into_boxed_str()));
                    }
                }
            }
        }
        json_keys.insert("resourceType");
        Model {
            json_keys,
            children,
            by_path,
            parents: r4::TYPE_PARENTS.iter().copied().collect(),
            resources: r4::RESOURCE_TYPES.iter().copied().collect(),
            type_names,
            search,
            compartment: r4::PATIENT_COMPARTMENT.iter().copied().collect(),
            required: r4::REQUIRED_ELEMENTS.iter().copied().collect(),
        }
    }

    /// A resource type's mandatory top-level elements (cardinality `1..`),
    /// by base name (`Immunization` → `occurrence`, `patient`, `status`,
    /// `vaccineCode`); empty for an unknown type or one with none.
    pub fn required_elements(&self, resource_type: &str) -> &'static [&'static str] {
        self.required.get(resource_type).copied().unwrap_or(&[])
    }

    /// The element `name` defined below `owner`, a type name (`HumanName`,
    /// `Patient`) or a backbone path (`Patient.contact`). Inherited elements
    /// are found through the type's parents (`Age` → `Quantity` → `Element`).
    pub fn child(&self, owner: &str, name: &str) -> Option<&Element> {
        let mut owner = owner;
        loop {
            if let Some(e) = self.children.get(owner).and_then(|c| c.get(name)) {
                return Some(e);
            }
            owner = self.parents.get(owner)?;
        }
    }

    /// The element and type that a JSON key holds under `owner`: the key
    /// itself (`birthDate`), or a choice variant (`valueQuantity` → element
    /// `value`, type `Quantity`).
    pub fn element_for_key(&self, owner: &str, key: &str) -> Option<(&Element, &'static str)> {
        if let Some(el) = self.child(owner, key)
            && !el.is_choice()
        {
            return Some((el, el.types[0]));
        }
        // Choice variants: the base name is the key up to a capitalised part.
        for (at, _) in key.char_indices().filter(|(_, c)| c.is_ascii_uppercase()) {
            if let Some(el) = self.child(owner, &key[..at])
                && let Some(t) = el.choice_type_of_key(key)
            {
                return Some((el, t));
            }
        }
        None
    }

    /// The model's `'static` copy of a JSON property name FHIR defines
    /// (`given`, `valueQuantity`, `_birthDate`), if it is one.
    pub fn json_key(&self, key: &str) -> Option<&'static str> {
        self.json_keys.get(key).copied()
    }

    /// The element at a full path such as `Observation.referenceRange.low`.
    pub fn element(&self, path: &str) -> Option<&Element> {
        let (owner, name) = self.by_path.get(path)?;
        self.children.get(owner)?.get(name)
    }

    /// The parent of a type (`Age` → `Quantity`, `Patient` → `DomainResource`).
    pub fn parent_type(&self, ty: &str) -> Option<&'static str> {
        self.parents.get(ty).copied()
    }

    /// Whether `ty` is `ancestor` or derives from it.
    pub fn is_subtype(&self, ty: &str, ancestor: &str) -> bool {
        let mut t = ty;
        loop {
            if t == ancestor {
                return true;
            }
            match self.parents.get(t) {
                Some(p) => t = p,
                None => return false,
            }
        }
    }

    /// Whether `ty` names a resource type (including `Resource` and `DomainResource`).
    pub fn is_resource_type(&self, ty: &str) -> bool {
        self.resources.contains(ty)
    }

    /// Whether `ty` is a FHIR primitive type (`string`, `date`, `positiveInt`, …).
    pub fn is_primitive(&self, ty: &str) -> bool {
        ty.starts_with(|c: char| c.is_ascii_lowercase()) && self.type_names.contains(ty)
    }

    /// The model's own `'static` spelling of a type name, if it is one.
    pub fn type_name(&self, ty: &str) -> Option<&'static str> {
        self.type_names.get(ty).copied()
    }

    /// Every resource type name, abstract ones included.
    pub fn resource_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.resources.iter().copied()
    }

    /// The search parameters that apply to `resource_type`, including those
    /// defined on `Resource` and `DomainResource`.
    pub fn search_params<'a>(&'a self, resource_type: &'a str) -> impl Iterator<Item = &'a SearchParam> + 'a {
        self.search.iter().filter(move |p| self.is_subtype(resource_type, p.base))
    }

    /// The search parameter `code` of `resource_type`, if defined.
    pub fn search_param(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        self.search.iter().find(|p| p.code == code && self.is_subtype(resource_type, p.base))
    }

    /// For the R4 Patient compartment: the search parameters that link a
    /// resource of this type to a patient (`Observation` → `subject`,
    /// `performer`); empty when the type is in the compartment definition
    /// without links, `None` when it is not listed.
    pub fn patient_compartment(&self, resource_type: &str) -> Option<&'static [&'static str]> {
        self.compartment.get(resource_type).copied()
    }
}
