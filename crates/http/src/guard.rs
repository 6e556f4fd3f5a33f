//! Limits that keep a hostile client from wearing a server down, for the
//! doors that check credentials (`veil serve`'s token endpoint, the
//! aggregator's site and API-key checks).
//!
//! A [`Door`] keeps, per caller (an address, a client id), a request rate
//! (a token bucket) and a failure backoff: after a few failed attempts the
//! caller must wait, twice as long after each further failure, up to a
//! ceiling, and a success forgets its failures. A caller told to wait gets
//! the time to wait, for a `Retry-After`, without its credentials being
//! checked at all, so guessing costs the guesser time and the server
//! nothing.
//!
//! The state is in memory, per process, and bounded: past [`MAX_CALLERS`]
//! callers the idle ones are forgotten, then those not backing off; a new
//! caller finding every place taken by callers backing off waits a second.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Callers remembered at most; beyond, entries idle for a minute go first.
pub const MAX_CALLERS: usize = 10_000;

/// The settings of a [`Door`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests per second a caller may make, on average.
    pub per_second: f64,
    /// Requests a caller may make at once before the rate applies.
    pub burst: f64,
    /// Failures a caller may have before it must wait.
    pub free_failures: u32,
    /// The longest wait after repeated failures.
    pub max_wait: Duration,
}

impl Default for Limits {
    /// 20 requests a second (bursts of 40); after 5 failures, a wait of 1 s
    /// doubling with each further failure, up to a minute.
    fn default() -> Limits {
        Limits { per_second: 20.0, burst: 40.0, free_failures: 5, max_wait: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Caller {
    tokens: f64,
    refilled: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// A door that counts its callers' requests and failures.
#[derive(Debug)]
pub struct Door {
    limits: Limits,
    callers: Mutex<HashMap<String, Caller>>,
}

impl Door {
    /// A door with these limits.
    pub fn new(limits: Limits) -> Door {
        Door { limits, callers: Mutex::new(HashMap::new()) }
    }

    /// Lets `caller` in (`Ok`) or says how long it must wait (`Err`): its
    /// rate is spent, or it is backing off after failures.
    pub fn admit(&self, caller: &str) -> Result<(), Duration> {
        self.admit_at(caller, Instant::now())
    }

    /// Records the outcome of an admitted request's credential check.
    pub fn outcome(&self, caller: &str, succeeded: bool) {
        self.outcome_at(caller, succeeded, Instant::now())
    }

    fn admit_at(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        if callers.len() >= MAX_CALLERS && !callers.contains_key(caller) {
            callers.retain(|_, c| {
                now.duration_since(c.refilled) < Duration::from_secs(60) || c.blocked_until.is_some_and(|b| b > now)
            });
            if callers.len() >= MAX_CALLERS {
                // All busy: keep only those backing off (forgetting them
                // would reset their wait), so memory stays bounded.
                callers.retain(|_, c| c.blocked_until.is_some_and(|b| b > now));
            }
            if callers.len() >= MAX_CALLERS {
                return Err(Duration::from_secs(1));
            }
        }
        let limits = self.limits;
        let c = callers.entry(caller.to_string()).or_insert(Caller {
            tokens: limits.burst,
            refilled: now,
            failures: 0,
            blocked_until: None,
        });
        if let Some(until) = c.blocked_until.filter(|u| *u > now) {
            return Err(until - now);
        }
        c.tokens = (c.tokens + now.duration_since(c.refilled).as_secs_f64() * limits.per_second).min(limits.burst);
        c.refilled = now;
        if c.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - c.tokens) / limits.per_second.max(f64::MIN_POSITIVE)));
        }
        c.tokens -= 1.0;
        Ok(())
    }

    fn outcome_at(&self, caller: &str, succeeded: bool, now: Instant) {
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = callers.get_mut(caller) else { return };
        if succeeded {
            c.failures = 0;
            c.blocked_until = None;
            return;
        }
        c.failures = c.failures.saturating_add(1);
        if c.failures > self.limits.free_failures {
            let doublings = (c.failures - self.limits.free_failures - 1).min(30);
            let wait = Duration::from_secs(1u64 << doublings).min(self.limits.max_wait);
            c.blocked_until = Some(now + wait);
        }
    }
}

/// What a handler found of the credentials it checked, put in its
/// response's extensions for [`guard`] to count: only refused credentials
/// are failures (a malformed request or a scope not granted are not
/// guesses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// They were good.
    Accepted,
    /// They were wrong, unknown or forged.
    Refused,
}

impl Credentials {
    /// `response`, marked with what its handler found.
    pub fn mark(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware for routes that check credentials
/// (`axum::middleware::from_fn_with_state(door, veil_http::guard)`): a
/// caller (by address) over its rate or backing off gets 429 with
/// `Retry-After` before its credentials are looked at; a response its
/// handler marked [`Credentials::Refused`] counts as a failed attempt, one
/// marked [`Credentials::Accepted`] as a success. Without the server's
/// connection information all callers share one count.
pub async fn guard(State(door): State<Arc<Door>>, request: Request, next: Next) -> Response {
    let caller =
        request.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "-".to_string(), |c| c.0.ip().to_string());
    if let Err(wait) = door.admit(&caller) {
        let secs = retry_after_secs(wait);
        let body = format!("too many attempts: try again in {secs} s");
        let mut r = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let response = next.run(request).await;
    if let Some(found) = response.extensions().get::<Credentials>() {
        door.outcome(&caller, *found == Credentials::Accepted);
    }
    response
}

/// Seconds for a `Retry-After` header: the wait rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_make_the_caller_wait_longer_each_time() {
        let door =
            Door::new(Limits { per_second: 1000.0, burst: 1000.0, free_failures: 2, max_wait: Duration::from_secs(4) });
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(door.admit_at("a", t0), Ok(()));
            door.outcome_at("a", false, t0);
        }
        assert_eq!(door.admit_at("a", t0), Ok(()), "two free failures");
        door.outcome_at("a", false, t0);
        assert_eq!(door.admit_at("a", t0), Err(Duration::from_secs(1)));
        assert_eq!(door.admit_at("b", t0), Ok(()), "another caller is not held up");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(door.admit_at("a", t1), Ok(()));
        door.outcome_at("a", false, t1);
        assert_eq!(door.admit_at("a", t1), Err(Duration::from_secs(2)), "doubled");
        let t2 = t1 + Duration::from_secs(2);
        for _ in 0..5 {
            door.outcome_at("a", false, t2);
        }
        assert_eq!(door.admit_at("a", t2), Err(Duration::from_secs(4)), "capped");
        let t3 = t2 + Duration::from_secs(4);
        assert_eq!(door.admit_at("a", t3), Ok(()));
        door.outcome_at("a", true, t3);
        door.outcome_at("a", false, t3);
        assert_eq!(door.admit_at("a", t3), Ok(()), "a success forgets the failures");
    }

    #[test]
    fn the_rate_holds_after_the_burst_and_refills_with_time() {
        let door = Door::new(Limits { per_second: 2.0, burst: 3.0, ..Limits::default() });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(door.admit_at("a", t0), Ok(()));
        }
        let wait = door.admit_at("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(door.admit_at("a", t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(retry_after_secs(wait), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_callers() {
        let door = Door::new(Limits::default());
        let t0 = Instant::now();
        for i in 0..MAX_CALLERS {
            door.admit_at(&i.to_string(), t0).unwrap();
        }
        door.admit_at("late", t0 + Duration::from_secs(61)).unwrap();
        assert!(door.callers.lock().unwrap().len() < 10, "idle callers forgotten");
        // Every place taken by active callers: the ones not backing off go.
        let t1 = t0 + Duration::from_secs(62);
        for i in 0..MAX_CALLERS {
            door.admit_at(&format!("busy{i}"), t1).unwrap();
        }
        door.admit_at("newcomer", t1).unwrap();
        assert!(door.callers.lock().unwrap().len() <= MAX_CALLERS);
    }
}
