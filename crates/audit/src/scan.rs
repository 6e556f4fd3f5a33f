//! The scan: every value of a de-identified resource, read with its FHIR
//! type, sorted into the categories HIPAA's Safe Harbor names
//! (§164.514(b)(2)(i) A–R) and Veil's own (free text, time-zone offsets,
//! original values that survived). Findings are counts by category and
//! element path, never values.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use veil_fhir::r4;

/// A kind of identifying value the scan looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// (A) Any part of a person's name (`HumanName`).
    Names,
    /// (B) Street lines and map coordinates.
    StreetAddresses,
    /// (B) City, district (county) and postal codes of more than three digits.
    SmallGeography,
    /// (C) Dates with a month or a day, and ages over 89 (birth years and `Age`).
    Dates,
    /// (D) Telephone numbers: `ContactPoint` phone, sms, pager or other, or a
    /// number that looks like one.
    Phone,
    /// (E) Fax numbers.
    Fax,
    /// (F) Email addresses.
    Email,
    /// (G) Social security numbers.
    Ssn,
    /// (H) Medical record numbers (identifiers typed `MR`).
    MedicalRecordNumbers,
    /// (I) Health plan beneficiary numbers (`MB`, `SN`, `Coverage.subscriberId`).
    HealthPlanNumbers,
    /// (J) Account numbers (`AN`, `Account.identifier`).
    AccountNumbers,
    /// (K) Certificate and licence numbers (`DL`, `PPN`, `LN`).
    LicenceNumbers,
    /// (L) Vehicle identification numbers in text.
    VehicleIds,
    /// (M) Device identifiers, serial and lot numbers, UDIs.
    DeviceIds,
    /// (N) URLs outside code systems and profiles.
    Urls,
    /// (O) IP addresses.
    IpAddresses,
    /// (P, Q) Photographs, biometrics and any other binary content.
    ImagesAndBinary,
    /// (R) Any other identifying number or code: identifier values, resource
    /// ids and references that are not keyed pseudonyms, OIDs, UUIDs, UIDs.
    OtherIdentifiers,
    /// Veil: free text (`string`, `markdown`, `xhtml`) outside the elements
    /// that carry only fixed vocabulary; it can hold any of the above.
    FreeText,
    /// Veil: a time-zone offset other than UTC, which tells where a shifted
    /// date really lies.
    TimeZoneOffsets,
    /// Veil: an original string or date (given `--original`) that reappears
    /// unchanged.
    OriginalValues,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 21] = [
        Category::Names,
        Category::StreetAddresses,
        Category::SmallGeography,
        Category::Dates,
        Category::Phone,
        Category::Fax,
        Category::Email,
        Category::Ssn,
        Category::MedicalRecordNumbers,
        Category::HealthPlanNumbers,
        Category::AccountNumbers,
        Category::LicenceNumbers,
        Category::VehicleIds,
        Category::DeviceIds,
        Category::Urls,
        Category::IpAddresses,
        Category::ImagesAndBinary,
        Category::OtherIdentifiers,
        Category::FreeText,
        Category::TimeZoneOffsets,
        Category::OriginalValues,
    ];

    /// The letter of §164.514(b)(2)(i) it stands for, or `-` for Veil's own.
    pub fn hipaa(self) -> &'static str {
        use Category::*;
        match self {
            Names => "A",
            StreetAddresses | SmallGeography => "B",
            Dates => "C",
            Phone => "D",
            Fax => "E",
            Email => "F",
            Ssn => "G",
            MedicalRecordNumbers => "H",
            HealthPlanNumbers => "I",
            AccountNumbers => "J",
            LicenceNumbers => "K",
            VehicleIds => "L",
            DeviceIds => "M",
            Urls => "N",
            IpAddresses => "O",
            ImagesAndBinary => "P, Q",
            OtherIdentifiers => "R",
            FreeText | TimeZoneOffsets | OriginalValues => "-",
        }
    }

    /// Its name in reports (`small-geography`).
    pub fn name(self) -> &'static str {
        use Category::*;
        match self {
            Names => "names",
            StreetAddresses => "street-addresses",
            SmallGeography => "small-geography",
            Dates => "dates",
            Phone => "phone",
            Fax => "fax",
            Email => "email",
            Ssn => "ssn",
            MedicalRecordNumbers => "medical-record-numbers",
            HealthPlanNumbers => "health-plan-numbers",
            AccountNumbers => "account-numbers",
            LicenceNumbers => "licence-numbers",
            VehicleIds => "vehicle-ids",
            DeviceIds => "device-ids",
            Urls => "urls",
            IpAddresses => "ip-addresses",
            ImagesAndBinary => "images-and-binary",
            OtherIdentifiers => "other-identifiers",
            FreeText => "free-text",
            TimeZoneOffsets => "time-zone-offsets",
            OriginalValues => "original-values",
        }
    }
}

/// Counts of findings by category, then by element path
/// (`Organization.address.city`).
pub type Findings = BTreeMap<Category, BTreeMap<String, u64>>;

/// The data types the scan treats specially, by the owner of an element
/// (a type name, or a backbone path, which is none of them). None of them
/// has subtypes in R4 but `Quantity`, whose are listed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identifier,
    ContactPoint,
    HumanName,
    Address,
    Coding,
    Quantity,
    Age,
    Reference,
    Meta,
    Extension,
    Other,
}

fn kind(owner: &str) -> Kind {
    match owner {
        "Identifier" => Kind::Identifier,
        "ContactPoint" => Kind::ContactPoint,
        "HumanName" => Kind::HumanName,
        "Address" => Kind::Address,
        "Coding" => Kind::Coding,
        "Quantity" | "SimpleQuantity" | "MoneyQuantity" | "Duration" | "Count" | "Distance" => Kind::Quantity,
        "Age" => Kind::Age,
        "Reference" => Kind::Reference,
        "Meta" => Kind::Meta,
        "Extension" => Kind::Extension,
        _ => Kind::Other,
    }
}

/// Elements whose values are fixed vocabulary wherever they occur, by the
/// type that holds them: a code system, a unit, a profile, a state. Their
/// values are not free text (they are still searched for IP and email
/// addresses, which no vocabulary holds).
fn is_vocabulary(owner: Kind, key: &str) -> bool {
    use Kind::*;
    match key {
        "system" => matches!(owner, Coding | Quantity | Age | Identifier),
        "version" => owner == Coding,
        "unit" => matches!(owner, Quantity | Age),
        "type" => owner == Reference,
        "profile" => owner == Meta,
        "state" | "country" => owner == Address,
        // An extension's definition, not data.
        "url" => owner == Extension,
        _ => false,
    }
}

/// Whether `text` is a keyed pseudonym as Veil's `cryptoHash` writes one:
/// 64 lowercase hex digits (HMAC-SHA256).
pub fn is_pseudonym(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+").unwrap());
static SSN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").unwrap());
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\+?1[ .-]?)?\(?\b\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b").unwrap());
static IPV4: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b").unwrap());
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b|::ffff:").unwrap());
static URL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b(https?|ftp)://|\bwww\.").unwrap());
static VIN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[A-HJ-NPR-Z0-9]{17}\b").unwrap());

/// The identifier kinds of the HL7 v2 table 0203 that HIPAA names.
fn identifier_category(identifier: &serde_json::Map<String, Json>, owner_resource: &str) -> Category {
    let system = identifier.get("system").and_then(Json::as_str).unwrap_or("").to_ascii_lowercase();
    let codes: Vec<&str> = identifier
        .get("type")
        .and_then(|t| t.get("coding"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("code").and_then(Json::as_str))
        .collect();
    let typed = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(c));
    if typed(&["SS", "SB"]) || system.contains("us-ssn") {
        Category::Ssn
    } else if typed(&["MR", "MRT"]) {
        Category::MedicalRecordNumbers
    } else if typed(&["MB", "SN", "MA", "MC"]) || owner_resource == "Coverage" {
        Category::HealthPlanNumbers
    } else if typed(&["AN", "ACSN"]) || owner_resource == "Account" {
        Category::AccountNumbers
    } else if typed(&["DL", "PPN", "LN", "LC"]) || system.contains("driver") || system.contains("passport") {
        Category::LicenceNumbers
    } else {
        Category::OtherIdentifiers
    }
}

/// What one scan looks at besides the values: original values to find
/// again, and the year that makes a birth year "over 89".
pub(crate) struct Context<'a> {
    pub originals: Option<&'a HashSet<u64>>,
    /// Whether dates are looked up among the originals: not for shifted
    /// dates, one of which equals some other original date by chance.
    pub compare_dates: bool,
    pub this_year: i32,
}

/// A 64-bit fingerprint of a string, for the set of original values (kept
/// as fingerprints so that the set stays small and holds no value).
pub(crate) fn fingerprint(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    text.hash(&mut h);
    // A second, independent pass over the bytes keeps collisions of
    // FxHash's weak string mixing from hiding or inventing a survivor.
    let mut b: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.finish() ^ b.rotate_left(29)
}

/// Scans one de-identified resource.
pub(crate) fn scan_resource(doc: &Json, cx: &Context, out: &mut Findings) {
    let Some(rt) = doc.get("resourceType").and_then(Json::as_str).and_then(|t| r4().type_name(t)) else {
        if let Json::Object(map) = doc {
            scan_object(map, "Resource", "(unknown)", &At::root("(unknown)"), cx, out);
        }
        return;
    };
    if let Json::Object(map) = doc {
        scan_object(map, rt, rt, &At::root(rt), cx, out);
    }
}

fn add(out: &mut Findings, category: Category, path: &At) {
    *out.entry(category).or_default().entry(path.render()).or_default() += 1;
}

/// Where a value sits: the chain of JSON keys from its resource type,
/// rendered (`Patient.address.city`) only for a finding, so that the walk
/// over the many values that are fine allocates nothing.
pub(crate) struct At<'a> {
    parent: Option<&'a At<'a>>,
    key: &'a str,
}

impl<'a> At<'a> {
    fn root(key: &'a str) -> At<'a> {
        At { parent: None, key }
    }

    fn child<'b>(&'b self, key: &'b str) -> At<'b>
    where
        'a: 'b,
    {
        At { parent: Some(self), key }
    }

    fn render(&self) -> String {
        match self.parent {
            Some(p) => p.render() + "." + self.key,
            None => self.key.to_string(),
        }
    }
}

/// `owner` is the type (or backbone path) defining the object's elements;
/// `resource` the resource type holding it.
fn scan_object(
    map: &serde_json::Map<String, Json>,
    owner: &'static str,
    resource: &str,
    path: &At,
    cx: &Context,
    out: &mut Findings,
) {
    let model = r4();
    let text = |key: &str| map.get(key).and_then(Json::as_str);
    let owner_kind = kind(owner);
    if owner_kind == Kind::Coding && veil_deid::is_security_label(text("system"), text("code"), text("display")) {
        return; // a label de-identification wrote (`REDACTED`), not data
    }
    if owner_kind == Kind::Identifier
        && let Some(value) = map.get("value").and_then(Json::as_str)
        && !is_pseudonym(value)
    {
        add(out, identifier_category(map, resource), &path.child("value"));
    }
    if owner_kind == Kind::ContactPoint
        && let Some(value) = map.get("value").and_then(Json::as_str)
        && !value.trim().is_empty()
    {
        let category = match map.get("system").and_then(Json::as_str) {
            Some("fax") => Category::Fax,
            Some("email") => Category::Email,
            Some("url") => Category::Urls,
            _ => Category::Phone,
        };
        let path = path.child("value");
        add(out, category, &path);
        check_patterns(value, &path, false, out);
    }
    if owner_kind == Kind::Age
        && let Some(years) = map.get("value").and_then(Json::as_f64)
        && years > 89.0
    {
        add(out, Category::Dates, &path.child("value"));
    }
    for (key, value) in map {
        if key == "resourceType" {
            continue;
        }
        let base = key.strip_prefix('_').unwrap_or(key);
        let Some((el, ty)) = model.element_for_key(owner, base) else {
            // Not an R4 element: whatever it holds is read as free text,
            // under a path that does not repeat its key (which could be data).
            scan_untyped(value, &path.child("(unknown)"), cx, out);
            continue;
        };
        let child_path = path.child(key);
        if key.starts_with('_') {
            // A primitive's id and extensions.
            each_item(value, |item| {
                if let Json::Object(m) = item {
                    scan_object(m, "Element", resource, &child_path, cx, out);
                }
            });
            continue;
        }
        if owner == "Location" && base == "position" {
            add(out, Category::StreetAddresses, &child_path);
            continue;
        }
        let child_owner = el.children_owner(ty);
        each_item(value, |item| match item {
            Json::Object(m) => match m.get("resourceType").and_then(Json::as_str).and_then(|t| model.type_name(t)) {
                Some(rt) => scan_object(m, rt, rt, &child_path.child(rt), cx, out),
                None => scan_object(m, child_owner, resource, &child_path, cx, out),
            },
            Json::String(s) => scan_string(s, owner, owner_kind, resource, base, ty, &child_path, cx, out),
            _ => {}
        });
    }
}

fn each_item<'a>(value: &'a Json, mut f: impl FnMut(&'a Json)) {
    match value {
        Json::Array(items) => items.iter().for_each(f),
        other => f(other),
    }
}

fn scan_untyped(value: &Json, path: &At, cx: &Context, out: &mut Findings) {
    match value {
        Json::String(s) => scan_text(s, path, true, cx, out),
        Json::Array(items) => items.iter().for_each(|v| scan_untyped(v, path, cx, out)),
        Json::Object(map) => map.values().for_each(|v| scan_untyped(v, path, cx, out)),
        _ => {}
    }
}

/// One primitive string value of FHIR type `ty`, held as `key` by `owner`.
#[allow(clippy::too_many_arguments)]
fn scan_string(
    s: &str,
    owner: &'static str,
    owner_kind: Kind,
    resource: &str,
    key: &str,
    ty: &str,
    path: &At,
    cx: &Context,
    out: &mut Findings,
) {
    if s.is_empty() {
        return;
    }
    let model = r4();
    match ty {
        "date" | "dateTime" | "instant" => {
            scan_date(s, key, path, cx, out);
            return;
        }
        "code" | "boolean" | "integer" | "decimal" | "positiveInt" | "unsignedInt" | "time" => return,
        _ => {}
    }
    if owner_kind == Kind::Identifier && key == "value" {
        return; // judged with its type, above
    }
    if owner_kind == Kind::ContactPoint && key == "value" {
        return;
    }
    if is_vocabulary(owner_kind, key) {
        check_patterns(s, path, false, out);
        return;
    }
    if owner_kind == Kind::Address {
        match key {
            "line" => add(out, Category::StreetAddresses, path),
            "city" | "district" => add(out, Category::SmallGeography, path),
            "postalCode" => {
                let digits = s.bytes().filter(u8::is_ascii_digit).count();
                if digits > 3 || s.bytes().any(|b| b.is_ascii_alphabetic()) {
                    add(out, Category::SmallGeography, path);
                }
            }
            _ => scan_text(s, path, true, cx, out),
        }
        survived(s, path, cx, out);
        return;
    }
    if owner_kind == Kind::HumanName {
        if key != "use" {
            add(out, Category::Names, path);
            survived(s, path, cx, out);
        }
        return;
    }
    if key == "id" && model.is_resource_type(owner) {
        if !is_pseudonym(s) {
            add(out, Category::OtherIdentifiers, path);
        }
        return;
    }
    if owner_kind == Kind::Reference && key == "reference" {
        let id = s.rsplit(['/', ':', '#']).next().unwrap_or(s);
        if !is_pseudonym(id) {
            add(out, Category::OtherIdentifiers, path);
        }
        return;
    }
    match key {
        "lotNumber" | "serialNumber" | "deviceIdentifier" | "carrierHRF" | "carrierAIDC" | "distinctIdentifier" => {
            add(out, Category::DeviceIds, path);
            survived(s, path, cx, out);
            return;
        }
        "subscriberId" if resource == "Coverage" => {
            add(out, Category::HealthPlanNumbers, path);
            return;
        }
        _ => {}
    }
    match ty {
        "uri" | "url" | "canonical" => {
            if s.starts_with("urn:oid:") || s.starts_with("urn:uuid:") {
                add(out, Category::OtherIdentifiers, path);
            } else if s.contains("://") {
                add(out, Category::Urls, path);
            } else {
                add(out, Category::FreeText, path);
            }
            check_patterns(s, path, false, out);
            survived(s, path, cx, out);
        }
        "oid" | "uuid" | "id" => {
            add(out, Category::OtherIdentifiers, path);
            survived(s, path, cx, out);
        }
        "base64Binary" => add(out, Category::ImagesAndBinary, path),
        _ => scan_text(s, path, true, cx, out),
    }
}

/// Free text: counted as such, searched for the kinds of identifier text
/// can carry, and looked up among the original values.
fn scan_text(s: &str, path: &At, is_free_text: bool, cx: &Context, out: &mut Findings) {
    if s.trim().is_empty() {
        return;
    }
    if is_free_text {
        add(out, Category::FreeText, path);
    }
    check_patterns(s, path, true, out);
    survived(s, path, cx, out);
}

/// Patterns of identifiers inside text. `all` adds the patterns that
/// vocabulary (a code system's URL) may match harmlessly.
fn check_patterns(s: &str, path: &At, all: bool, out: &mut Findings) {
    // Cheap tests first: most values have no '@', no ':' and few digits.
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if s.contains('@') && EMAIL.is_match(s) {
        add(out, Category::Email, path);
    }
    if digits >= 4 && IPV4.captures_iter(s).any(|c| (1..=4).all(|i| c[i].parse::<u16>().is_ok_and(|n| n <= 255))) {
        add(out, Category::IpAddresses, path);
    }
    if s.contains(':') && IPV6.is_match(s) && !is_vocabulary_url(s) {
        add(out, Category::IpAddresses, path);
    }
    if !all {
        return;
    }
    if digits >= 9 && SSN.is_match(s) {
        add(out, Category::Ssn, path);
    }
    if digits >= 10 && PHONE.is_match(s) {
        add(out, Category::Phone, path);
    }
    if URL.is_match(s) {
        add(out, Category::Urls, path);
    }
    if s.len() >= 17 && VIN.find_iter(s).any(|m| m.as_str().bytes().any(|b| b.is_ascii_alphabetic())) {
        add(out, Category::VehicleIds, path);
    }
}

/// URLs such as `urn:oid:2.16.840…` contain colons, not IPv6 addresses.
fn is_vocabulary_url(s: &str) -> bool {
    s.starts_with("urn:oid:") || s.starts_with("http://") || s.starts_with("https://")
}

fn survived(s: &str, path: &At, cx: &Context, out: &mut Findings) {
    if let Some(originals) = cx.originals
        && originals.contains(&fingerprint(s))
    {
        add(out, Category::OriginalValues, path);
    }
}

/// A date, dateTime or instant: more than a year is a finding, a birth year
/// more than 89 years ago is one, and so is a time-zone offset other than UTC.
fn scan_date(s: &str, key: &str, path: &At, cx: &Context, out: &mut Findings) {
    if s.len() > 4 {
        add(out, Category::Dates, path);
        if cx.compare_dates {
            survived(s, path, cx, out);
        }
    } else if key == "birthDate"
        && let Ok(year) = s.parse::<i32>()
        && cx.this_year - year > 89
    {
        add(out, Category::Dates, path);
    }
    if let Some(t) = s.find('T') {
        let zone = &s[t..];
        let offset = zone.rfind(['+', '-']).map(|i| &zone[i..]);
        if let Some(offset) = offset
            && offset != "+00:00"
            && offset != "-00:00"
        {
            add(out, Category::TimeZoneOffsets, path);
        }
    }
}

/// The original values to look for: every string of the types that can
/// carry something identifying (not codes, numbers or booleans) and every
/// date finer than a year, as fingerprints.
pub(crate) fn original_values(doc: &Json, out: &mut Vec<u64>) {
    let Some(rt) = doc.get("resourceType").and_then(Json::as_str).and_then(|t| r4().type_name(t)) else { return };
    if let Json::Object(map) = doc {
        originals_of_object(map, rt, out);
    }
}

fn originals_of_object(map: &serde_json::Map<String, Json>, owner: &'static str, out: &mut Vec<u64>) {
    let model = r4();
    for (key, value) in map {
        let Some((el, ty)) = model.element_for_key(owner, key) else { continue };
        let child_owner = el.children_owner(ty);
        each_item(value, |item| match item {
            Json::Object(m) => match m.get("resourceType").and_then(Json::as_str).and_then(|t| model.type_name(t)) {
                Some(rt) => originals_of_object(m, rt, out),
                None => originals_of_object(m, child_owner, out),
            },
            Json::String(s) => {
                let wanted = match ty {
                    "date" | "dateTime" | "instant" => s.len() > 4,
                    "code" | "boolean" | "integer" | "decimal" | "positiveInt" | "unsignedInt" | "time" => false,
                    // Units, code systems and states are the same before and after by design.
                    _ => !(is_vocabulary(kind(owner), key) || key == "use" && kind(owner) == Kind::HumanName),
                };
                if wanted && s.len() >= 2 {
                    out.push(fingerprint(s));
                }
            }
            _ => {}
        });
    }
}
