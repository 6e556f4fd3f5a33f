//! SMART scopes for backend services: `system/<Type|*>.<permissions>`, in
//! v1 form (`read`, `write`, `*`) or v2 form (a subset of `cruds`, in that
//! order). Only `system/` scopes are granted: `patient/` and `user/` need
//! a launch context that backend services do not have.

use std::fmt;

use crate::OAuthError;

/// The five v2 permissions, in the order v2 writes them.
const PERMISSIONS: [char; 5] = ['c', 'r', 'u', 'd', 's'];

/// One `system/` scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The resource type; `None` for `*`.
    pub resource: Option<String>,
    /// Which of create, read, update, delete, search (in that order).
    permissions: [bool; 5],
    /// Written in v1 form (`.read`), kept so a grant answers in kind.
    v1: bool,
}

impl Scope {
    /// Parses one scope; `Ok(None)` for a well-formed scope that is not a
    /// `system/` resource scope (`patient/…`, `launch`, `openid`).
    pub fn parse(text: &str) -> Result<Option<Scope>, OAuthError> {
        let Some(rest) = text.strip_prefix("system/") else {
            return Ok(None);
        };
        let bad =
            || OAuthError::invalid_scope(format!("'{text}' is not a SMART scope (system/Type.read, system/*.rs, …)"));
        if rest.contains('?') {
            // Granular v2 scopes would need their filters enforced on every
            // export; refusing them is the closed way to fail.
            return Err(OAuthError::invalid_scope(format!(
                "'{text}': scopes with search parameters are not supported"
            )));
        }
        let (resource, perms) = rest.split_once('.').ok_or_else(bad)?;
        let resource = match resource {
            "*" => None,
            t if veil_fhir::r4().is_resource_type(t) => Some(t.to_string()),
            _ => return Err(bad()),
        };
        let (permissions, v1) = match perms {
            "read" => ([false, true, false, false, true], true),
            "write" => ([true, false, true, true, false], true),
            "*" => ([true; 5], true),
            letters => {
                let mut p = [false; 5];
                let mut last = None;
                for ch in letters.chars() {
                    let i = PERMISSIONS.iter().position(|&x| x == ch).ok_or_else(bad)?;
                    if last.is_some_and(|l| i <= l) {
                        return Err(bad());
                    }
                    p[i] = true;
                    last = Some(i);
                }
                if last.is_none() {
                    return Err(bad());
                }
                (p, false)
            }
        };
        Ok(Some(Scope { resource, permissions, v1 }))
    }

    /// Whether it lets a client read resources of `resource_type`.
    pub fn reads(&self, resource_type: &str) -> bool {
        self.permits(resource_type, 'r')
    }

    /// Whether it grants `permission` (one of `c r u d s`) on `resource_type`.
    pub fn permits(&self, resource_type: &str, permission: char) -> bool {
        let granted = PERMISSIONS.iter().position(|&p| p == permission).is_some_and(|i| self.permissions[i]);
        granted && self.resource.as_deref().is_none_or(|t| t == resource_type)
    }

    /// What this scope and `other` both allow, if anything.
    fn meet(&self, other: &Scope) -> Option<Scope> {
        let resource = match (&self.resource, &other.resource) {
            (None, r) | (r, None) => r.clone(),
            (Some(a), Some(b)) if a == b => Some(a.clone()),
            _ => return None,
        };
        let permissions: [bool; 5] = std::array::from_fn(|i| self.permissions[i] && other.permissions[i]);
        permissions.contains(&true).then_some(Scope { resource, permissions, v1: self.v1 })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "system/{}.", self.resource.as_deref().unwrap_or("*"))?;
        match self.permissions {
            [true, true, true, true, true] if self.v1 => f.write_str("*"),
            [false, true, false, false, true] if self.v1 => f.write_str("read"),
            [true, false, true, true, false] if self.v1 => f.write_str("write"),
            p => PERMISSIONS.iter().zip(p).filter(|(_, on)| *on).try_for_each(|(c, _)| write!(f, "{c}")),
        }
    }
}

/// A set of scopes, as a space-separated `scope` parameter holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    /// Parses a `scope` parameter, keeping the `system/` resource scopes.
    pub fn parse(text: &str) -> Result<Scopes, OAuthError> {
        let mut out = Vec::new();
        for s in text.split_ascii_whitespace() {
            out.extend(Scope::parse(s)?);
        }
        Ok(Scopes(out))
    }

    /// What a client that may have `allowed` gets when it asks for `self`:
    /// each requested scope narrowed to what the allowed ones cover.
    /// `invalid_scope` when nothing is left.
    pub fn grant(&self, allowed: &Scopes) -> Result<Scopes, OAuthError> {
        let mut granted: Vec<Scope> = Vec::new();
        for r in &self.0 {
            for a in &allowed.0 {
                if let Some(s) = r.meet(a)
                    && !granted.contains(&s)
                {
                    granted.push(s);
                }
            }
        }
        if granted.is_empty() {
            return Err(OAuthError::invalid_scope("none of the requested system scopes is allowed for this client"));
        }
        Ok(Scopes(granted))
    }

    /// Whether any scope lets the client read `resource_type`.
    pub fn reads(&self, resource_type: &str) -> bool {
        self.permits(resource_type, 'r')
    }

    /// Whether any scope grants `permission` (`c r u d s`) on `resource_type`.
    pub fn permits(&self, resource_type: &str, permission: char) -> bool {
        self.0.iter().any(|s| s.permits(resource_type, permission))
    }

    /// The resource types the scopes let a client read: `None` when a
    /// wildcard scope lets it read every type.
    pub fn readable_types(&self) -> Option<Vec<String>> {
        let mut types = Vec::new();
        for s in self.0.iter().filter(|s| s.permissions[1]) {
            match &s.resource {
                None => return None,
                Some(t) if !types.contains(t) => types.push(t.clone()),
                Some(_) => {}
            }
        }
        Some(types)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Scope::to_string).collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &str) -> Scopes {
        Scopes::parse(s).unwrap()
    }

    #[test]
    fn v1_and_v2_forms() {
        let s = scopes("system/Patient.read system/*.rs launch patient/Observation.read system/Observation.cruds");
        assert_eq!(s.to_string(), "system/Patient.read system/*.rs system/Observation.cruds");
        assert!(s.reads("Condition"), "system/*.rs reads everything");
        assert!(scopes("system/Patient.read").reads("Patient"));
        assert!(!scopes("system/Patient.read").reads("Observation"));
        assert!(!scopes("system/*.write").reads("Patient"));
        assert!(!scopes("system/*.cud").reads("Patient"));
        assert!(scopes("system/*.*").reads("Patient"));
        assert!(scopes("system/*.write").permits("Patient", 'c') && !scopes("system/*.rs").permits("Patient", 'u'));
        assert!(
            scopes("system/Patient.cruds").permits("Patient", 'd')
                && !scopes("system/Patient.cruds").permits("Observation", 'd')
        );
        assert_eq!(
            scopes("system/Patient.read system/Observation.rs system/Patient.rs system/Condition.c").readable_types(),
            Some(vec!["Patient".into(), "Observation".into()])
        );
        assert_eq!(scopes("system/Patient.read system/*.r").readable_types(), None);
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in [
            "system/Patient",
            "system/Patient.rc",
            "system/Patient.rr",
            "system/Patient.",
            "system/Patient.x",
            "system/Patients.read",
            "system/Observation.rs?category=laboratory",
        ] {
            let e = Scopes::parse(bad).unwrap_err();
            assert_eq!(e.code, "invalid_scope", "{bad}");
        }
    }

    #[test]
    fn grants_are_the_intersection() {
        let allowed = scopes("system/Patient.read system/Observation.rs");
        // Granted in the form asked for: v1 asked, v1 answered.
        assert_eq!(
            scopes("system/*.read").grant(&allowed).unwrap().to_string(),
            "system/Patient.read system/Observation.read"
        );
        assert_eq!(
            scopes("system/*.rs").grant(&allowed).unwrap().to_string(),
            "system/Patient.rs system/Observation.rs"
        );
        assert_eq!(scopes("system/Patient.cruds").grant(&allowed).unwrap().to_string(), "system/Patient.rs");
        assert_eq!(
            scopes("system/Patient.read system/Condition.read").grant(&allowed).unwrap().to_string(),
            "system/Patient.read"
        );
        assert_eq!(scopes("system/Condition.read").grant(&allowed).unwrap_err().code, "invalid_scope");
        assert_eq!(scopes("system/*.write").grant(&scopes("system/*.read")).unwrap_err().code, "invalid_scope");
        assert_eq!(scopes("").grant(&allowed).unwrap_err().code, "invalid_scope");
        let granted = scopes("system/*.rs").grant(&scopes("system/Patient.read")).unwrap();
        assert!(granted.reads("Patient") && !granted.reads("Observation"));
    }
}
