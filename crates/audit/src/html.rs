//! `veil-risk.html`: the evidence as one self-contained page, for a privacy
//! officer who would rather look than read. No script, no request for
//! anything (the Content-Security-Policy allows only its own style sheet,
//! by hash), every figure carries `data-figure` so a test can read it back.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::Evidence;

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:62em;color:#1d2330;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
.pass{color:#0b6b2e}.fail{color:#a4161a}\
table{border-collapse:collapse;margin:.5em 0}td,th{border-bottom:1px solid #d4d8e0;padding:.25em .8em;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.bad td{background:#fdecea}\
svg text{font:12px system-ui,sans-serif;fill:#1d2330}svg rect.bar{fill:#3a6ea5}\
.note{color:#555}";

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page.
pub(crate) fn render(e: &Evidence) -> String {
    let style_hash = veil_util::base64::encode(&Sha256::digest(STYLE.as_bytes()), veil_util::base64::STANDARD);
    let mut h = String::new();
    let verdict = if e.passes { ("pass", "meets") } else { ("fail", "does not meet") };
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-{style_hash}'\">\
         <title>Veil de-identification evidence</title><style>{STYLE}</style></head><body>\
         <h1>This output <span class=\"{}\" data-figure=\"verdict\">{}</span> <span data-figure=\"standard\">{}</span></h1>\
         <p>{}</p><p class=\"note\">{} resources read, made {}. Counts only: this page holds no value from the data.</p>",
        verdict.0,
        verdict.1,
        e.standard.name(),
        esc(e.standard.describe()),
        e.resources,
        esc(&e.created)
    );
    if !e.failures.is_empty() {
        h.push_str("<ul class=\"fail\">");
        for f in &e.failures {
            let _ = write!(h, "<li>{}</li>", esc(f));
        }
        h.push_str("</ul>");
    }

    h.push_str("<h2>What is left, by HIPAA category</h2><table><tr><th>Category</th><th>HIPAA</th><th>Allowed</th><th>Values</th><th>Elements</th></tr>");
    for c in &e.categories {
        let bad = c.forbidden && c.values > 0;
        let where_: Vec<String> = c.paths.iter().take(8).map(|(p, n)| format!("{} ({n})", esc(p))).collect::<Vec<_>>();
        let more = c.paths.len().saturating_sub(8);
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td class=\"n\" data-figure=\"category-{}\">{}</td><td>{}{}</td></tr>",
            if bad { " class=\"bad\"" } else { "" },
            c.category.name(),
            c.hipaa,
            if c.forbidden { "no" } else { "yes" },
            c.category.name(),
            c.values,
            where_.join(", "),
            if more > 0 { format!(", and {more} more") } else { String::new() }
        );
    }
    h.push_str("</table>");
    if !e.compared_with_original {
        h.push_str("<p class=\"note\">Original data was not compared: <code>veil audit --original DIR</code> finds every original string or date that reappears.</p>");
    }

    let r = &e.risk;
    h.push_str("<h2>Re-identification risk</h2><table>");
    let rows: [(&str, &str, String); 12] = [
        ("patients", "Patients", r.patients.to_string()),
        ("quasi-identifiers", "Quasi-identifiers", r.quasi_identifiers.len().to_string()),
        ("classes", "Equivalence classes", r.classes.to_string()),
        ("min-k", "Smallest class (k)", r.min_k.to_string()),
        ("unique", "Unique patients", r.unique.to_string()),
        ("prosecutor-highest", "Prosecutor (= journalist) risk, highest", format!("{:.4}", r.prosecutor.highest)),
        ("prosecutor-average", "Prosecutor (= journalist) risk, average", format!("{:.4}", r.prosecutor.average)),
        ("records-at-risk", "Records with risk above the threshold", r.prosecutor.records_at_risk.to_string()),
        ("marketer", "Marketer risk", format!("{:.4}", r.marketer)),
        ("events", "Events naming a patient", r.longitudinal.events.to_string()),
        ("unique-event-counts", "Patients unique by event count", r.longitudinal.unique_event_counts.to_string()),
        (
            "unique-interval-sequences",
            "Patients unique by their intervals",
            r.longitudinal.unique_interval_sequences.to_string(),
        ),
    ];
    for (id, label, value) in rows {
        let _ = write!(h, "<tr><td>{label}</td><td class=\"n\" data-figure=\"{id}\">{value}</td></tr>");
    }
    let _ = write!(h, "</table><p class=\"note\">Threshold for \"at risk\": 1/k above {}.</p>", r.threshold);

    h.push_str("<h2>Equivalence class sizes</h2>");
    h.push_str(&chart(r));

    h.push_str(
        "<h2>Riskiest quasi-identifier pairs</h2><table><tr><th>Pair</th><th>Patients unique on it alone</th></tr>",
    );
    for p in &r.riskiest_pairs {
        let _ =
            write!(h, "<tr><td>{} + {}</td><td class=\"n\">{}</td></tr>", esc(&p.paths[0]), esc(&p.paths[1]), p.unique);
    }
    h.push_str("</table><h2>Quasi-identifiers</h2><table><tr><th>Element of Patient</th><th>Distinct values</th><th>Unique on it alone</th></tr>");
    for q in &r.quasi_identifiers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&q.path),
            q.distinct,
            q.unique_alone
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Bars of the number of patients in classes of each size (sizes above 20
/// together), drawn as SVG.
fn chart(r: &crate::Risk) -> String {
    let mut bars: Vec<(String, u64)> = Vec::new();
    let mut over = 0;
    for (&k, &classes) in &r.k_histogram {
        if k <= 20 {
            bars.push((k.to_string(), k * classes));
        } else {
            over += k * classes;
        }
    }
    if over > 0 {
        bars.push(("> 20".into(), over));
    }
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let (w, bar_h, gap, label_w) = (560.0, 20.0, 6.0, 60.0);
    let height = bars.len() as f64 * (bar_h + gap) + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"Patients by the size of their equivalence class\">",
        w + label_w + 80.0
    );
    let _ = write!(s, "<text x=\"0\" y=\"14\">k</text><text x=\"{label_w}\" y=\"14\">patients</text>");
    for (i, (label, patients)) in bars.iter().enumerate() {
        let y = 24.0 + i as f64 * (bar_h + gap);
        let len = w * *patients as f64 / top as f64;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\">{label}</text><rect class=\"bar\" data-k=\"{}\" data-patients=\"{patients}\" x=\"{label_w}\" y=\"{y}\" width=\"{len:.1}\" height=\"{bar_h}\"/><text x=\"{:.1}\" y=\"{}\">{patients}</text>",
            y + 15.0,
            esc(label),
            label_w + len + 6.0,
            y + 15.0
        );
    }
    s.push_str("</svg>");
    s
}
