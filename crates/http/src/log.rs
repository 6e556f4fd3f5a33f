//! The access log: one line per request on stderr, written when the
//! response leaves. It names the route's pattern (`/{type}/{id}`, never the
//! ids in the path), the status, who asked (a client id or a site name,
//! never a token or a secret) and the time taken.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value as Json};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-11-22T17:40:00.123Z GET /{type}/{id} 200 client=lab 3ms`, for a terminal.
    #[default]
    Human,
    /// One JSON object per line, for a log collector.
    Json,
}

/// Who made a request, set by a handler or middleware on the response
/// extensions once the credentials are checked.
#[derive(Debug, Clone)]
pub struct Who(pub String);

/// The access log's settings: the format, and what [`Who`] is called in a
/// line (`client` on the FHIR server, `site` on the aggregator).
#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    /// How lines are written.
    pub format: LogFormat,
    /// The field name for [`Who`].
    pub who: &'static str,
}

impl AccessLog {
    /// Writes one event line: `what` then its fields, in order. The caller
    /// passes only values that identify nothing (ids Veil made, names of
    /// sites and studies, outcomes).
    pub fn event(&self, what: &str, fields: &[(&str, Json)]) {
        eprintln!("{}", self.line(&veil_util::clock::now_instant(), what, fields));
    }

    fn line(&self, time: &str, what: &str, fields: &[(&str, Json)]) -> String {
        match self.format {
            LogFormat::Human => {
                let mut line = format!("{time} {what}");
                for (name, value) in fields {
                    match value {
                        Json::String(s) => line += &format!(" {name}={s}"),
                        other => line += &format!(" {name}={other}"),
                    }
                }
                line
            }
            LogFormat::Json => {
                let mut object = Map::new();
                object.insert("time".into(), Json::from(time));
                object.insert("event".into(), Json::from(what));
                for (name, value) in fields {
                    object.insert(name.to_string(), value.clone());
                }
                Json::Object(object).to_string()
            }
        }
    }
}

/// The middleware: `.layer(from_fn_with_state(Arc::new(log), access_log))`.
pub async fn access_log(State(log): State<Arc<AccessLog>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("(no route)".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    let who = response.extensions().get::<Who>().map_or("-".to_string(), |w| w.0.clone());
    let (status, ms) = (response.status().as_u16(), started.elapsed().as_millis() as u64);
    let time = veil_util::clock::now_instant();
    let line = match log.format {
        LogFormat::Human => format!("{time} {method} {route} {status} {}={who} {ms}ms", log.who),
        LogFormat::Json => log.line(
            &time,
            "request",
            &[
                ("method", method.into()),
                ("route", route.into()),
                ("status", status.into()),
                (log.who, who.into()),
                ("ms", ms.into()),
            ],
        ),
    };
    eprintln!("{line}");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_and_json_lines_say_the_same() {
        let fields =
            [("route", Json::from("/{type}/{id}")), ("status", Json::from(200)), ("client", Json::from("lab"))];
        let human = AccessLog { format: LogFormat::Human, who: "client" }.line("T", "request", &fields);
        assert_eq!(human, "T request route=/{type}/{id} status=200 client=lab");
        let json: Json =
            serde_json::from_str(&AccessLog { format: LogFormat::Json, who: "client" }.line("T", "request", &fields))
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"time": "T", "event": "request", "route": "/{type}/{id}", "status": 200, "client": "lab"})
        );
    }
}
