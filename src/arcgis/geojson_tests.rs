//! Esri JSON -> GeoJSON: every geometry type, hole assignment and ring
//! orientation (checked with geo, not by hand), errors, and a property
//! test that no ring list panics.

use geo::{Coord, LineString, Winding};
use geojson::{Geometry, GeometryValue, Position};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::geojson::{esri_geometry_to_geojson, feature_to_geojson, GeometryError};

fn convert(v: Value) -> Option<GeometryValue> {
    esri_geometry_to_geojson(&v).unwrap().map(|g| g.value)
}

fn line(ring: &[Position]) -> LineString<f64> {
    ring.iter().map(|p| Coord { x: p[0], y: p[1] }).collect()
}

fn xy(ring: &[Position]) -> Vec<(f64, f64)> {
    ring.iter().map(|p| (p[0], p[1])).collect()
}

/// RFC 7946 §3.1.6: exterior counter-clockwise, holes clockwise (as geo
/// reads the rings).
fn assert_rfc7946(polygon: &[Vec<Position>]) {
    for (i, ring) in polygon.iter().enumerate() {
        let l = line(ring);
        assert!(l.is_closed(), "ring {i} is closed");
        if i == 0 {
            assert!(l.is_ccw(), "exterior is counter-clockwise: {:?}", xy(ring));
        } else {
            assert!(l.is_cw(), "hole {i} is clockwise: {:?}", xy(ring));
        }
    }
}

/// A square ring from (x0, y0) to (x1, y1), clockwise (Esri's exterior).
fn cw_square(x0: f64, y0: f64, x1: f64, y1: f64) -> Value {
    json!([[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]])
}

/// The same square counter-clockwise (Esri's hole).
fn ccw_square(x0: f64, y0: f64, x1: f64, y1: f64) -> Value {
    json!([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
}

#[test]
fn points_keep_z_and_empty_points_are_none() {
    assert_eq!(
        convert(json!({"x": -117.19, "y": 34.05})),
        Some(GeometryValue::new_point([-117.19, 34.05]))
    );
    assert_eq!(
        convert(json!({"x": 1.0, "y": 2.0, "z": 3.0, "m": 4.0, "hasZ": true, "hasM": true})),
        Some(GeometryValue::new_point([1.0, 2.0, 3.0]))
    );
    assert_eq!(convert(json!({"x": null, "y": 2.0})), None);
    assert_eq!(convert(json!({"x": "NaN", "y": "NaN"})), None);
    // Nothing but the spatial reference: empty, not an error.
    assert_eq!(convert(json!({"spatialReference": {"wkid": 4326}})), None);
}

#[test]
fn multipoints() {
    assert_eq!(
        convert(json!({"points": [[1, 2], [3, 4]], "spatialReference": {"wkid": 4326}})),
        Some(GeometryValue::new_multi_point([[1.0, 2.0], [3.0, 4.0]]))
    );
    assert_eq!(convert(json!({"points": []})), None);
}

#[test]
fn polylines_one_path_or_several_with_m_dropped() {
    assert_eq!(
        convert(json!({"paths": [[[0, 0], [1, 1], [2, 0]]]})),
        Some(GeometryValue::new_line_string([
            [0.0, 0.0],
            [1.0, 1.0],
            [2.0, 0.0]
        ]))
    );
    let Some(GeometryValue::MultiLineString { coordinates: lines }) = convert(json!({
        "hasM": true,
        "paths": [[[0, 0, 10], [1, 1, 20]], [[5, 5, 30], [6, 6, 40]]]
    })) else {
        panic!("two paths are a MultiLineString")
    };
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().flatten().all(|p| p.len() == 2), "m is dropped");
    let Some(GeometryValue::LineString { coordinates: l }) = convert(json!({
        "hasZ": true, "hasM": true,
        "paths": [[[0, 0, 7, 100], [1, 1, 8, 200]]]
    })) else {
        panic!("one path")
    };
    assert_eq!(l[1].as_slice(), &[1.0, 1.0, 8.0], "z kept, m dropped");
    // A path of one position has no length: dropped.
    assert_eq!(convert(json!({"paths": [[[0, 0]]]})), None);
}

#[test]
fn an_esri_polygon_comes_out_counter_clockwise() {
    let Some(GeometryValue::Polygon { coordinates: p }) =
        convert(json!({"rings": [cw_square(0., 0., 10., 10.)]}))
    else {
        panic!("one ring is a Polygon")
    };
    assert_eq!(p.len(), 1);
    assert_rfc7946(&p);
}

#[test]
fn a_hole_goes_into_its_exterior_and_both_are_rewound() {
    let Some(GeometryValue::Polygon { coordinates: p }) = convert(json!({
        "rings": [cw_square(0., 0., 10., 10.), ccw_square(2., 2., 4., 4.)]
    })) else {
        panic!("one exterior is a Polygon")
    };
    assert_eq!(p.len(), 2);
    assert_rfc7946(&p);
    assert!(xy(&p[1]).contains(&(2.0, 2.0)));
}

#[test]
fn two_exteriors_with_one_hole_each_are_a_multipolygon() {
    // Rings written out of order: the second exterior's hole first.
    let Some(GeometryValue::MultiPolygon { coordinates: mp }) = convert(json!({
        "rings": [
            ccw_square(22., 2., 24., 4.),
            cw_square(0., 0., 10., 10.),
            cw_square(20., 0., 30., 10.),
            ccw_square(2., 2., 4., 4.),
        ]
    })) else {
        panic!("two exteriors are a MultiPolygon")
    };
    assert_eq!(mp.len(), 2);
    for p in &mp {
        assert_eq!(p.len(), 2, "each exterior has its hole");
        assert_rfc7946(p);
    }
    // In the order the exteriors were written, each with its own hole.
    assert!(xy(&mp[0][0]).contains(&(10.0, 10.0)));
    assert!(xy(&mp[0][1]).contains(&(4.0, 4.0)));
    assert!(xy(&mp[1][0]).contains(&(30.0, 10.0)));
    assert!(xy(&mp[1][1]).contains(&(24.0, 4.0)));
}

#[test]
fn a_hole_written_clockwise_is_still_a_hole() {
    let Some(GeometryValue::Polygon { coordinates: p }) = convert(json!({
        "rings": [cw_square(0., 0., 10., 10.), cw_square(2., 2., 4., 4.)]
    })) else {
        panic!("the inner ring is a hole, not a second polygon")
    };
    assert_eq!(p.len(), 2);
    assert_rfc7946(&p);
}

#[test]
fn an_island_in_a_hole_is_a_polygon_of_its_own() {
    let Some(GeometryValue::MultiPolygon { coordinates: mp }) = convert(json!({
        "rings": [
            cw_square(0., 0., 10., 10.),
            ccw_square(2., 2., 8., 8.),
            cw_square(4., 4., 6., 6.),
        ]
    })) else {
        panic!("an island is a second polygon")
    };
    assert_eq!(mp.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    mp.iter().for_each(|p| assert_rfc7946(p));
}

#[test]
fn a_hole_touching_its_exterior_is_still_its_hole() {
    // The hole shares the exterior's corner (0, 0) and part of an edge.
    let Some(GeometryValue::Polygon { coordinates: p }) = convert(json!({
        "rings": [cw_square(0., 0., 10., 10.), json!([[0, 0], [5, 0], [5, 5], [0, 0]])]
    })) else {
        panic!("a touching hole is still a hole")
    };
    assert_eq!(p.len(), 2);
    assert_rfc7946(&p);
}

#[test]
fn unclosed_and_degenerate_rings() {
    // Esri rings are closed; one that is not is closed here.
    let Some(GeometryValue::Polygon { coordinates: p }) =
        convert(json!({"rings": [[[0, 0], [0, 1], [1, 1], [1, 0]]]}))
    else {
        panic!("closed and converted")
    };
    assert_eq!(p[0].len(), 5);
    assert_rfc7946(&p);
    // No area: dropped, and nothing left is no geometry.
    assert_eq!(
        convert(json!({"rings": [[[0, 0], [1, 1], [2, 2], [0, 0]]]})),
        None
    );
    assert_eq!(convert(json!({"rings": [[[0, 0], [0, 0]]]})), None);
    assert_eq!(convert(json!({"rings": []})), None);
}

#[test]
fn z_survives_rewinding() {
    let Some(GeometryValue::Polygon { coordinates: p }) = convert(json!({
        "hasZ": true,
        "rings": [[[0, 0, 1], [0, 10, 2], [10, 10, 3], [10, 0, 4], [0, 0, 1]]]
    })) else {
        panic!("a polygon")
    };
    assert_rfc7946(&p);
    let zs: Vec<f64> = p[0].iter().map(|q| q[2]).collect();
    assert_eq!(zs, [1.0, 4.0, 3.0, 2.0, 1.0], "each z stays with its x, y");
}

#[test]
fn envelopes_are_polygons() {
    let Some(GeometryValue::Polygon { coordinates: p }) =
        convert(json!({"xmin": -118.0, "ymin": 33.0, "xmax": -117.0, "ymax": 34.0}))
    else {
        panic!("an envelope is a Polygon")
    };
    assert_rfc7946(&p);
    assert!(xy(&p[0]).contains(&(-117.0, 34.0)));
    assert_eq!(
        convert(json!({"xmin": "NaN", "ymin": 0, "xmax": 1, "ymax": 1})),
        None
    );
}

#[test]
fn curves_and_malformed_geometries_are_errors() {
    let err = |v: Value| esri_geometry_to_geojson(&v).unwrap_err();
    assert_eq!(
        err(json!({"curveRings": [[[0, 0], {"c": [[1, 1], [0, 1]]}]]})),
        GeometryError::Curves("curveRings")
    );
    assert_eq!(
        err(json!({"curvePaths": []})),
        GeometryError::Curves("curvePaths")
    );
    assert_eq!(err(json!([1, 2])), GeometryError::NotAnObject);
    assert_eq!(
        err(json!({"wkt": "POINT (1 2)"})),
        GeometryError::UnknownShape
    );
    for (bad, at) in [
        (json!({"rings": "square"}), "rings"),
        (
            json!({"rings": [[[0, 0], [0, "1"], [1, 1], [0, 0]]]}),
            "rings[0][1][1]",
        ),
        (json!({"paths": [[[0]]]}), "paths[0][0]"),
        (json!({"paths": [[[0, null]]]}), "paths[0][0][1]"),
        (json!({"points": [7]}), "points[0]"),
        (json!({"x": "east", "y": 1}), "x"),
        (json!({"x": 1, "y": 1, "hasZ": "yes"}), "hasZ"),
    ] {
        match err(bad.clone()) {
            GeometryError::Malformed { at: got, .. } => assert_eq!(got, at, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn features_carry_attributes_and_the_callers_extra_properties() {
    let mut extra = Map::new();
    extra.insert("edit".into(), json!("add"));
    extra.insert("layer".into(), json!(0));
    let f = feature_to_geojson(
        &json!({"geometry": {"x": 1, "y": 2}, "attributes": {"OBJECTID": 7, "layer": "shadowed"}}),
        extra.clone(),
    )
    .unwrap();
    assert_eq!(f.geometry, Some(Geometry::new_point([1.0, 2.0])));
    assert_eq!(f.property("OBJECTID"), Some(&json!(7)));
    assert_eq!(f.property("edit"), Some(&json!("add")));
    assert_eq!(f.property("layer"), Some(&json!(0)), "extra wins");
    // A table row: no geometry.
    let row = feature_to_geojson(&json!({"attributes": {"reading": 7.25}}), extra.clone()).unwrap();
    assert_eq!(row.geometry, None);
    let text = serde_json::to_value(&row).unwrap();
    assert_eq!(text["type"], "Feature");
    assert_eq!(text["geometry"], Value::Null);
    assert_eq!(
        feature_to_geojson(&json!({"attributes": [1]}), Map::new()).unwrap_err(),
        GeometryError::Attributes
    );
    assert!(feature_to_geojson(&json!({"geometry": {"rings": 1}}), extra).is_err());
}

#[test]
fn every_feature_of_an_extract_changes_answer_converts() {
    let doc: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/arcgis/extract-changes-sync.json"
    ))
    .unwrap();
    let mut n = 0;
    for edit in doc["edits"].as_array().unwrap() {
        let layer = edit["id"].as_i64().unwrap();
        for (list, name) in [("adds", "add"), ("updates", "update")] {
            for feature in edit["features"][list].as_array().unwrap() {
                let mut extra = Map::new();
                extra.insert("edit".into(), json!(name));
                extra.insert("layer".into(), json!(layer));
                let f = feature_to_geojson(feature, extra).unwrap();
                assert_eq!(f.geometry.is_some(), layer == 0, "layer 1 is a table");
                assert_eq!(f.property("layer"), Some(&json!(layer)));
                n += 1;
            }
        }
    }
    assert_eq!(n, 3);
}

fn arb_coord() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (-5i32..5, -5i32..5).prop_map(|(x, y)| json!([x, y])),
        2 => (any::<f64>(), any::<f64>()).prop_map(|(x, y)| json!([x, y])),
        1 => Just(json!([null, 1])),
        1 => Just(json!([1])),
        1 => Just(json!("x")),
        1 => (-5i32..5, -5i32..5, any::<i16>(), any::<i16>())
            .prop_map(|(x, y, z, m)| json!([x, y, z, m])),
    ]
}

proptest! {
    /// Whatever rings come in, conversion answers (a geometry, none or an
    /// error) without panicking, and every polygon it gives is wound as
    /// RFC 7946 asks wherever geo can tell the winding.
    #[test]
    fn random_rings_never_panic(
        rings in prop::collection::vec(prop::collection::vec(arb_coord(), 0..8), 0..6),
        has_z in any::<Option<bool>>(),
        has_m in any::<Option<bool>>(),
    ) {
        let g = json!({"rings": rings, "hasZ": has_z, "hasM": has_m});
        if let Ok(Some(geometry)) = esri_geometry_to_geojson(&g) {
            let polygons = match geometry.value {
                GeometryValue::Polygon { coordinates: p } => vec![p],
                GeometryValue::MultiPolygon { coordinates: mp } => mp,
                other => panic!("rings gave {other:?}"),
            };
            for p in &polygons {
                prop_assert!(!p.is_empty());
                for (i, ring) in p.iter().enumerate() {
                    let w = line(ring).winding_order();
                    prop_assert!(w.is_some(), "degenerate rings are dropped");
                    prop_assert_eq!(line(ring).is_ccw(), i == 0);
                }
            }
        }
    }
}
