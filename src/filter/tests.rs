//! Filters as a GIS administrator writes them, on events normalised from
//! the ArcGIS fixtures, and on hostile input.

use serde_json::{json, Value};

use super::{EvalError, Filter, FilterError, MAX_DEPTH, MAX_LEN};
use crate::arcgis::payload::normalise;
use crate::domain::edit::Edit;
use crate::domain::event::Event;

fn event(fixture: &str) -> Event {
    let doc: Value = serde_json::from_str(fixture).unwrap();
    normalise(&doc, false).unwrap().remove(0)
}

fn service_event() -> Event {
    event(include_str!(
        "../../tests/fixtures/arcgis/server-feature-created.json"
    ))
}

fn share_event() -> Event {
    event(include_str!(
        "../../tests/fixtures/arcgis/portal-item-share.json"
    ))
}

fn f(expr: &str) -> Filter {
    Filter::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn on_feature(expr: &str, edit: Edit, layer: i64, feature: Value) -> Result<bool, EvalError> {
    f(expr).matches_feature("parcels", &service_event(), edit, layer, &feature)
}

fn hydrant(status: &str, flow: Value) -> Value {
    json!({
        "geometry": {"x": -117.19, "y": 34.05},
        "attributes": {"OBJECTID": 118, "status": status, "FLOW_GPM": flow,
                       "INSPECTED_BY": "jdoe", "EditDate": 1733068800000_i64}
    })
}

#[test]
fn a_hydrant_added_out_of_service() {
    let e = r#"edit == "add" && feature.attributes.status == "Out of service""#;
    assert!(on_feature(e, Edit::Add, 0, hydrant("Out of service", json!(450))).unwrap());
    assert!(!on_feature(e, Edit::Update, 0, hydrant("Out of service", json!(450))).unwrap());
    assert!(!on_feature(e, Edit::Add, 0, hydrant("In service", json!(450))).unwrap());
    assert!(f(e).uses_features());
}

#[test]
fn an_item_shared_with_everyone() {
    let e = r#"kind == "item" && operation == "share" && "Everyone" in properties.sharedToGroups"#;
    let filter = f(e);
    assert!(!filter.uses_features());
    assert!(filter.matches_event("portal", &share_event()).unwrap());
    let private = Event {
        properties: std::sync::Arc::new(json!({"sharedToGroups": ["4adc30bb"]})),
        ..share_event()
    };
    assert!(!filter.matches_event("portal", &private).unwrap());
    // Portal's `source` is `kind`; `source` is the relay's source.
    assert!(
        f(r#"source == "portal" && origin == "portal" && username == "jdoe""#)
            .matches_event("portal", &share_event())
            .unwrap()
    );
}

#[test]
fn inspected_features_of_layer_zero() {
    let e = r#"layer == 0 && feature.attributes.INSPECTED_BY != """#;
    assert!(on_feature(e, Edit::Update, 0, hydrant("ok", json!(1))).unwrap());
    assert!(!on_feature(e, Edit::Update, 1, hydrant("ok", json!(1))).unwrap());
    let blank = json!({"attributes": {"INSPECTED_BY": ""}});
    assert!(!on_feature(e, Edit::Update, 0, blank).unwrap());
}

#[test]
fn parcels_except_deletes() {
    let e = r#"source == "parcels" && edit != "delete""#;
    let filter = f(e);
    let ev = service_event();
    let feature = json!({"attributes": {"OBJECTID": 54}});
    assert!(filter
        .matches_feature("parcels", &ev, Edit::Add, 0, &feature)
        .unwrap());
    assert!(!filter
        .matches_feature("parcels", &ev, Edit::Delete, 0, &feature)
        .unwrap());
    assert!(!filter
        .matches_feature("hydrants", &ev, Edit::Add, 0, &feature)
        .unwrap());
}

#[test]
fn int_and_double_fields_compare_by_value() {
    // ArcGIS writes a double field's whole values as `450` or `450.0`
    // depending on the server: both must compare with either literal.
    for flow in [json!(450), json!(450.0), json!(450.5)] {
        for e in [
            "feature.attributes.FLOW_GPM < 500.0",
            "feature.attributes.FLOW_GPM < 500",
            "feature.attributes.FLOW_GPM > 5",
            "feature.attributes.FLOW_GPM >= 450",
        ] {
            assert!(
                on_feature(e, Edit::Add, 0, hydrant("ok", flow.clone())).unwrap(),
                "{e} on {flow}"
            );
        }
    }
    assert!(on_feature(
        "feature.attributes.FLOW_GPM == 450",
        Edit::Add,
        0,
        hydrant("ok", json!(450.0))
    )
    .unwrap());
    // Arithmetic does not mix them (CEL's rule): a double field takes
    // double literals.
    let double = || hydrant("ok", json!(450.5));
    assert!(on_feature(
        "feature.attributes.FLOW_GPM + 1 > 0",
        Edit::Add,
        0,
        double()
    )
    .is_err());
    assert!(on_feature(
        "feature.attributes.FLOW_GPM + 1.0 > 0.0",
        Edit::Add,
        0,
        double()
    )
    .unwrap());
    assert!(on_feature(
        "feature.attributes.OBJECTID == 118",
        Edit::Add,
        0,
        hydrant("ok", json!(1))
    )
    .unwrap());
}

#[test]
fn service_events_by_change_type_and_time() {
    let ev = service_event();
    for e in [
        r#"operation == "FeaturesCreated" && service == "Hosted/Parcels.FeatureServer""#,
        r#"kind == "FeatureServer" && uri.startsWith("/services/Hosted/")"#,
        "when >= 1730385704000 && portal_url == null",
        r#"has(properties.id) && changes_url.contains("extractChanges")"#,
    ] {
        assert!(f(e).matches_event("parcels", &ev).unwrap(), "{e}");
    }
}

#[test]
fn missing_keys_are_errors_unless_tested_with_has() {
    let no_status = json!({"attributes": {"OBJECTID": 1}, "geometry": null});
    let err = on_feature(
        r#"feature.attributes.status == "x""#,
        Edit::Add,
        0,
        no_status.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::Execution(_)), "{err}");
    assert!(err.to_string().contains("status"), "{err}");
    assert!(!on_feature(
        r#"has(feature.attributes.status) && feature.attributes.status == "x""#,
        Edit::Add,
        0,
        no_status.clone()
    )
    .unwrap());
    assert!(on_feature("feature.geometry == null", Edit::Add, 0, no_status).unwrap());
}

#[test]
fn other_evaluation_errors() {
    let ev = service_event();
    let err = f("operation").matches_event("s", &ev).unwrap_err();
    assert_eq!(err.to_string(), "filter returned a string, not a bool");
    assert_eq!(
        f("when").matches_event("s", &ev).unwrap_err().to_string(),
        "filter returned an int, not a bool"
    );
    // Wrong types: a string against a number, arithmetic on a string.
    for e in [
        "operation > 5",
        "operation - 1 == 0",
        "properties.nope.deeper == 1",
        "1 / 0 == 1",
        "nosuchvariable == 1",
        // Built without chrono: times are ints (`when`), not timestamps.
        r#"timestamp("2026-01-01T00:00:00Z") < timestamp("2027-01-01T00:00:00Z")"#,
    ] {
        assert!(f(e).matches_event("s", &ev).is_err(), "{e}");
    }
    // A feature filter asked about an event: the feature is unbound.
    assert!(f(r#"edit == "add""#).matches_event("s", &ev).is_err());
}

#[test]
fn uses_features_reads_references_not_text() {
    for (e, uses) in [
        (r#"edit == "add""#, true),
        ("layer == 0", true),
        ("has(feature.attributes.x)", true),
        (r#"operation == "feature""#, false),
        ("properties.layer == 0", false),
        (r#""edit" in properties"#, false),
    ] {
        assert_eq!(f(e).uses_features(), uses, "{e}");
    }
}

#[test]
fn syntax_errors_name_their_position() {
    let err = Filter::compile("edit ==").unwrap_err();
    let FilterError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    // Where the missing operand should be: just past the end.
    assert_eq!((*line, *column), (1, 8), "{err}");
    assert!(
        err.to_string()
            .starts_with("syntax error at line 1, column 8: "),
        "{err}"
    );
    let FilterError::Syntax { line, column, .. } =
        Filter::compile("edit == \"add\" &&\n  feature.x ==").unwrap_err()
    else {
        panic!("a syntax error")
    };
    assert_eq!((line, column), (2, 15));
    assert!(
        std::error::Error::source(&err).is_some(),
        "the parser's errors are kept"
    );
    assert!(Filter::compile("edit = \"add\"").is_err());
    assert!(Filter::compile("").is_err());
}

#[test]
fn long_or_deep_expressions_are_refused_at_compile() {
    let long = format!("source == \"{}\"", "x".repeat(MAX_LEN));
    assert!(matches!(
        Filter::compile(&long),
        Err(FilterError::TooLong { .. })
    ));
    let parens = format!("{}true{}", "(".repeat(500), ")".repeat(500));
    assert!(Filter::compile(&parens).is_err());
    // The parser folds pairs of negations: deep text, shallow tree.
    let negations = format!("{}true", "!".repeat(2000));
    assert!(f(&negations).matches_event("s", &service_event()).unwrap());
    // As deep as MAX_LEN allows: every second byte a level.
    let chain = format!("1{} == 1", "+1".repeat((MAX_LEN - 6) / 2));
    assert!(Filter::compile(&chain).is_err());
    let members = format!("properties{} == 1", ".a".repeat((MAX_LEN - 15) / 2));
    let calls = format!(
        "{}1{}",
        "size([".repeat(MAX_LEN / 9),
        "])".repeat(MAX_LEN / 9)
    );
    assert!(Filter::compile(&members).is_err());
    assert!(calls.len() <= MAX_LEN);
    assert!(matches!(
        Filter::compile(&calls),
        Err(FilterError::TooDeep { .. })
    ));
    // Brackets inside strings are text.
    let quoted = format!("operation != \"{}\"", "(".repeat(100));
    assert!(f(&quoted).matches_event("s", &service_event()).unwrap());
}

#[test]
fn the_deepest_accepted_filter_evaluates_on_a_small_stack() {
    // Deep but within MAX_DEPTH: evaluation recursion stays well inside
    // a quarter of a tokio worker's 2 MiB stack.
    let e = format!("properties{} == 1 || true", ".a".repeat(MAX_DEPTH - 5));
    let filter = f(&e);
    let ev = service_event();
    let got = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || filter.matches_event("s", &ev).map_err(|e| e.to_string()))
        .unwrap()
        .join()
        .unwrap();
    assert!(got.is_ok(), "{got:?}");
}

#[test]
fn hostile_features_are_errors_or_answers() {
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!({ "a": deep });
    }
    let err = on_feature("has(feature.attributes)", Edit::Add, 0, deep).unwrap_err();
    assert!(matches!(err, EvalError::TooDeep { .. }), "{err}");
    let huge = json!({"attributes": {"notes": "x".repeat(4 << 20)}});
    assert!(on_feature(
        "size(feature.attributes.notes) > 1000 && feature.attributes.notes.matches('^x+$')",
        Edit::Add,
        0,
        huge
    )
    .unwrap());
    for feature in [
        json!(null),
        json!([1, 2]),
        json!("feature"),
        json!({"attributes": null}),
        json!({"attributes": {"status": 5}}),
        json!({"attributes": {"status": [1]}}),
        json!({"attributes": {"big": u64::MAX, "neg": i64::MIN, "tiny": 1e-300}}),
    ] {
        for e in [
            r#"feature.attributes.status == "Out of service""#,
            "feature.attributes.status > 5.5",
            "feature.attributes.big > feature.attributes.neg",
            "size(feature) > 0",
            "feature.attributes.exists(k, k == 'status')",
        ] {
            // Any answer or error, never a panic.
            let _ = on_feature(e, Edit::Add, 0, feature.clone());
        }
    }
}

#[test]
fn filters_are_cheap_to_clone_and_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Filter>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<FilterError>();
    error::<EvalError>();
    let a = f("true");
    let b = a.clone();
    assert!(std::sync::Arc::ptr_eq(&a.0, &b.0));
    assert_eq!(b.text(), "true");
}

proptest::proptest! {
    /// Any text made of CEL's characters compiles or is refused, and
    /// whatever compiles decides or errs, without a panic.
    #[test]
    fn random_expressions_never_panic(
        text in "[a-z_.0-9 ()\\[\\]{}!=<>&|+*/%\"'?:,-]{0,120}",
    ) {
        if let Ok(filter) = Filter::compile(&text) {
            let _ = filter.matches_event("s", &service_event());
            let _ = filter.matches_feature(
                "s",
                &service_event(),
                Edit::Update,
                0,
                &json!({"attributes": {"a": 1, "b": "x"}, "geometry": null}),
            );
        }
    }
}
