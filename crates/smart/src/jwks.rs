//! Public keys of clients registered by JWKS URL, fetched when needed and
//! kept no longer than the client's `Cache-Control` allows (reference:
//! bulk-export.md §4.2).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

use crate::OAuthError;

/// How long a set is kept when the response says nothing about caching.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// A set missing the asked-for `kid` is fetched again (the client may have
/// rotated its key), but not more often than this.
const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Key sets are small; anything larger is refused.
const MAX_BYTES: usize = 256 * 1024;

/// Fetched key sets by URL.
pub struct JwksCache {
    http: reqwest::Client,
    sets: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    set: JwkSet,
    fetched: Instant,
    keep: Duration,
}

impl JwksCache {
    /// An empty cache.
    pub fn new() -> JwksCache {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A key set is fetched from the URL the client registered, not from wherever that redirects.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with defaults");
        JwksCache { http, sets: Mutex::new(HashMap::new()) }
    }

    /// The key set at `url`, holding `kid` if the client publishes it.
    pub async fn keys(&self, url: &str, kid: &str) -> Result<JwkSet, OAuthError> {
        let cached = {
            let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.get(url).and_then(|e| {
                let age = e.fetched.elapsed();
                let fresh = age < e.keep;
                let has_kid = e.set.find(kid).is_some();
                (fresh && (has_kid || age < REFETCH_AFTER)).then(|| e.set.clone())
            })
        };
        if let Some(set) = cached {
            return Ok(set);
        }
        let unavailable =
            || OAuthError::invalid_client("the client's registered JWKS URL did not answer with a key set");
        let response =
            self.http.get(url).header("accept", "application/json").send().await.map_err(|_| unavailable())?;
        if !response.status().is_success() {
            return Err(unavailable());
        }
        let keep =
            response.headers().get("cache-control").and_then(|v| v.to_str().ok()).map_or(DEFAULT_MAX_AGE, max_age);
        let body = response.bytes().await.map_err(|_| unavailable())?;
        if body.len() > MAX_BYTES {
            return Err(unavailable());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| unavailable())?;
        if !keep.is_zero() {
            let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.insert(url.to_string(), Entry { set: set.clone(), fetched: Instant::now(), keep });
        }
        Ok(set)
    }
}

impl Default for JwksCache {
    fn default() -> JwksCache {
        JwksCache::new()
    }
}

/// How long a `Cache-Control` value lets a response be kept.
fn max_age(value: &str) -> Duration {
    let mut age = DEFAULT_MAX_AGE;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(secs) = directive.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok()) {
            age = Duration::from_secs(secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_limits_how_long_a_set_is_kept() {
        assert_eq!(max_age("public, max-age=60"), Duration::from_secs(60));
        assert_eq!(max_age("max-age=0"), Duration::ZERO);
        assert_eq!(max_age("no-store"), Duration::ZERO);
        assert_eq!(max_age("max-age=60, no-cache"), Duration::ZERO);
        assert_eq!(max_age("public"), DEFAULT_MAX_AGE);
    }
}
