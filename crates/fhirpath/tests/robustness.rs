//! No input makes the parser or the evaluator panic, and depth is bounded by
//! errors rather than by the stack.

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use veil_fhirpath::{ErrorKind, Expression};

fn sample() -> Json {
    json!({
        "resourceType": "Patient",
        "id": "x",
        "name": [{"family": "F", "given": ["A", "B"]}],
        "birthDate": "1970-01-01",
        "contained": [{"resourceType": "Observation", "status": "final", "valueQuantity": {"value": 1.5, "unit": "kg"}}]
    })
}

/// Pieces of FHIRPath, glued at random: most combinations are nonsense, and
/// every one must come back as a value or an error.
const PIECES: &[&str] = &[
    "Patient",
    "name",
    "given",
    "family",
    ".",
    "(",
    ")",
    "[",
    "]",
    "0",
    "1",
    "1.5",
    "'a'",
    "@2014-01",
    "@T10:00",
    "+",
    "-",
    "*",
    "/",
    "|",
    "=",
    "!=",
    "~",
    "<",
    ">=",
    "and",
    "or",
    "implies",
    "is",
    "as",
    "where(",
    "select(",
    "exists(",
    "first()",
    "ofType(",
    "Quantity",
    "$this",
    "$index",
    "%resource",
    "nodesByType('HumanName')",
    "descendants()",
    "repeat(",
    "iif(",
    ",",
    "substring(",
    "toString()",
    "5 'mg'",
    "{}",
    "true",
    "div",
    "mod",
    "contains",
    "in",
    "`x`",
    "\n",
    "//c\n",
    "/*",
    "*/",
    "aggregate(",
    "$total",
    "sort(",
    "children()",
    "contained",
    "value",
    "resolve()",
    "extension(",
    "trace(",
];

fn eval_all(src: &str) {
    let resource = sample();
    if let Ok(e) = Expression::compile(src) {
        let _ = e.evaluate(&resource);
        let _ = e.evaluate_with(&veil_fhirpath::Context::new(&resource).strict(true));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,80}") {
        eval_all(&src);
    }

    #[test]
    fn fhirpath_like_text_never_panics(parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..24)) {
        eval_all(&parts.join(" "));
        eval_all(&parts.concat());
    }
}

#[test]
fn nesting_at_the_limit_evaluates_without_overflow() {
    let resource = sample();
    // The deepest expressions the parser accepts still evaluate on a test thread's stack.
    for depth in [60, 120] {
        let parens = "(".repeat(depth) + "1" + &")".repeat(depth);
        assert!(Expression::compile(&parens).unwrap().evaluate(&resource).is_ok());
        let sum = "1".to_string() + &" + 1".repeat(depth);
        assert_eq!(Expression::compile(&sum).unwrap().evaluate(&resource).unwrap()[0].to_json(), json!(depth + 1));
        let path = "Patient".to_string() + &".name".repeat(depth);
        assert!(Expression::compile(&path).unwrap().evaluate(&resource).is_ok());
        let calls = "Patient".to_string() + &".where(true)".repeat(depth);
        assert!(Expression::compile(&calls).unwrap().evaluate(&resource).is_ok());
    }
    let too_deep = "(".repeat(1000) + "1" + &")".repeat(1000);
    assert_eq!(Expression::compile(&too_deep).unwrap_err().kind(), &ErrorKind::TooDeep);
    let nested_where = "Patient".to_string() + &".where(name.where(true".repeat(300) + &"))".repeat(300);
    assert_eq!(Expression::compile(&nested_where).unwrap_err().kind(), &ErrorKind::TooDeep);
}

#[test]
fn deep_and_huge_resources() {
    // serde_json refuses JSON nested deeper than 128 levels, which bounds
    // every tree Veil reads; up to that depth descendants() walks iteratively.
    let nest = |levels: usize| {
        let mut deep = json!({"url": "leaf"});
        for _ in 0..levels {
            deep = json!({"url": "x", "extension": [deep]});
        }
        json!({"resourceType": "Patient", "extension": [deep]})
    };
    let resource: Json = serde_json::from_str(&nest(62).to_string()).expect("126 levels parse");
    let n = Expression::compile("descendants().count()").unwrap().evaluate(&resource).unwrap();
    assert_eq!(n[0].to_json(), json!(126));
    assert!(serde_json::from_str::<Json>(&nest(200).to_string()).is_err(), "deeper input is refused");
    // A resource with a hundred thousand names.
    let names: Vec<Json> = (0..100_000).map(|i| json!({"family": format!("F{i}")})).collect();
    let big = json!({"resourceType": "Patient", "name": names});
    let count = Expression::compile("Patient.name.family.count()").unwrap().evaluate(&big).unwrap();
    assert_eq!(count[0].to_json(), json!(100_000));
}
