//! Esri JSON geometries and features (what `extractChanges` and `query`
//! return) as GeoJSON (RFC 7946). Pure functions over `serde_json` values.
//!
//! Coordinates pass through unchanged: the relay asks ArcGIS for
//! `outSR=4326`, so they already are the WGS 84 longitude/latitude RFC 7946
//! wants, and nothing here reprojects (a `spatialReference` member is
//! ignored). `z` is kept, `m` is dropped (GeoJSON has no measures).
//!
//! Polygons are rebuilt rather than copied ring by ring: Esri lists all
//! rings of a polygon flat (exteriors clockwise, holes counter-clockwise,
//! in any order), GeoJSON wants each exterior with its own holes and the
//! opposite orientation. Rings are nested by containment (geo's
//! [`CoordinatePosition`]), so a hole that was written clockwise is still
//! a hole, and then wound as RFC 7946 §3.1.6 asks with geo's [`Winding`].

use geo::coordinate_position::CoordPos;
use geo::winding_order::WindingOrder;
use geo::{Area, BoundingRect, Coord, CoordinatePosition, LineString, Polygon, Rect, Winding};
use geojson::{Geometry, GeometryValue, Position};
use serde_json::{Map, Value};

/// Why an Esri geometry or feature could not be converted. Never a panic:
/// every shape of JSON is either converted or refused with one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// The geometry is not a JSON object.
    #[error("geometry is not a JSON object")]
    NotAnObject,
    /// An object with none of the members of an Esri geometry.
    #[error("not an Esri geometry: expected x/y, points, paths, rings or xmin/ymin/xmax/ymax")]
    UnknownShape,
    /// True curves, which GeoJSON cannot hold and which are not densified
    /// here (ArcGIS densifies them itself unless asked for
    /// `returnTrueCurves=true`, which the relay never asks for).
    #[error("{0} (true curves) cannot be converted to GeoJSON; query without returnTrueCurves")]
    Curves(&'static str),
    /// A member of the wrong type or a coordinate that is not a finite number.
    #[error("{at}: {message}")]
    Malformed {
        /// Where, as a JSON path inside the geometry (`rings[0][3]`).
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A feature's `attributes` member that is not an object.
    #[error("feature attributes are not a JSON object")]
    Attributes,
}

fn malformed(at: impl Into<String>, message: impl Into<String>) -> GeometryError {
    GeometryError::Malformed {
        at: at.into(),
        message: message.into(),
    }
}

/// An Esri JSON feature (`{"attributes": {..}, "geometry": {..}}`) as a
/// GeoJSON feature: its properties are the attributes with `extra` added
/// (the caller's `edit` and `layer`; a key in both takes `extra`'s value,
/// so the caller's meaning cannot be shadowed by a field of that name).
/// A missing or null geometry (tables, features without a shape) gives a
/// feature whose geometry is null; a missing or null `attributes` gives
/// just `extra`.
pub fn feature_to_geojson(
    feature: &Value,
    extra: Map<String, Value>,
) -> Result<geojson::Feature, GeometryError> {
    let obj = feature.as_object().ok_or(GeometryError::NotAnObject)?;
    let mut properties = match obj.get("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(GeometryError::Attributes),
    };
    properties.extend(extra);
    let geometry = match obj.get("geometry") {
        None | Some(Value::Null) => None,
        Some(g) => esri_geometry_to_geojson(g)?,
    };
    Ok(geojson::Feature {
        bbox: None,
        geometry,
        id: None,
        properties: Some(properties),
        foreign_members: None,
    })
}

/// An Esri JSON geometry as a GeoJSON geometry, or `None` for an empty
/// one (a point whose `x` is null or NaN, no points, paths or rings left,
/// an envelope whose `xmin` is null or NaN, an object with no members but
/// `spatialReference`/`hasZ`/`hasM`).
///
/// - point `{x, y[, z]}` -> Point;
/// - multipoint `{points}` -> MultiPoint;
/// - polyline `{paths}` -> LineString for one path, MultiLineString for more;
/// - polygon `{rings}` -> Polygon for one exterior ring, MultiPolygon for
///   more (see the module documentation for how holes are assigned);
/// - envelope `{xmin, ymin, xmax, ymax}` -> Polygon;
/// - `curvePaths`/`curveRings` -> [`GeometryError::Curves`].
///
/// Paths with fewer than two positions and rings with fewer than three
/// distinct positions (or no area) are dropped rather than refused: such
/// degenerate parts carry no shape and ArcGIS does store them.
pub fn esri_geometry_to_geojson(geometry: &Value) -> Result<Option<Geometry>, GeometryError> {
    let obj = geometry.as_object().ok_or(GeometryError::NotAnObject)?;
    for key in ["curvePaths", "curveRings"] {
        if obj.contains_key(key) {
            return Err(GeometryError::Curves(key));
        }
    }
    let dims = Dims::of(obj)?;
    let value = if obj.contains_key("x") {
        point(obj)?
    } else if let Some(points) = obj.get("points") {
        let points = positions(points, "points", dims)?;
        (!points.is_empty()).then(|| GeometryValue::MultiPoint {
            coordinates: points,
        })
    } else if let Some(paths) = obj.get("paths") {
        polyline(paths, dims)?
    } else if let Some(rings) = obj.get("rings") {
        polygon(rings, dims)?
    } else if obj.contains_key("xmin") {
        envelope(obj)?
    } else if obj
        .keys()
        .all(|k| matches!(k.as_str(), "spatialReference" | "hasZ" | "hasM"))
    {
        None
    } else {
        return Err(GeometryError::UnknownShape);
    };
    Ok(value.map(Geometry::new))
}

/// Which of the third and fourth values of a coordinate array are kept.
#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Whether the third value is `z` (kept) rather than `m` (dropped).
    third_is_z: bool,
}

impl Dims {
    fn of(obj: &Map<String, Value>) -> Result<Dims, GeometryError> {
        let flag = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(malformed(key, "is not a boolean")),
        };
        let (has_z, has_m) = (flag("hasZ")?, flag("hasM")?);
        // Esri writes `[x, y, m]` when hasM is set without hasZ; without
        // either flag a third value is taken as z, the only reading that
        // loses nothing GeoJSON can hold.
        Ok(Dims {
            third_is_z: has_z.unwrap_or(has_m != Some(true)),
        })
    }
}

/// A JSON number as a finite `f64`; `None` for null or NaN (Esri's
/// spellings of "no value").
fn number(v: &Value, at: &str) -> Result<Option<f64>, GeometryError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.eq_ignore_ascii_case("nan") => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            Some(f) if f.is_nan() => Ok(None),
            _ => Err(malformed(at, "is not a finite number")),
        },
        _ => Err(malformed(at, "is not a number")),
    }
}

fn point(obj: &Map<String, Value>) -> Result<Option<GeometryValue>, GeometryError> {
    let get = |key: &str| number(obj.get(key).unwrap_or(&Value::Null), key);
    let (Some(x), Some(y)) = (get("x")?, get("y")?) else {
        return Ok(None);
    };
    let coordinates = match get("z")? {
        Some(z) => Position::from([x, y, z]),
        None => Position::from([x, y]),
    };
    Ok(Some(GeometryValue::Point { coordinates }))
}

/// One coordinate array `[x, y[, z|m[, m]]]`.
fn position(v: &Value, at: &str, dims: Dims) -> Result<Position, GeometryError> {
    let a = v
        .as_array()
        .ok_or_else(|| malformed(at, "is not a coordinate array"))?;
    if a.len() < 2 {
        return Err(malformed(at, "has fewer than two coordinates"));
    }
    let need = |i: usize| {
        number(&a[i], &format!("{at}[{i}]"))?
            .ok_or_else(|| malformed(format!("{at}[{i}]"), "is null or NaN"))
    };
    let (x, y) = (need(0)?, need(1)?);
    let z = match a.get(2) {
        Some(v) if dims.third_is_z => number(v, &format!("{at}[2]"))?,
        _ => None,
    };
    Ok(match z {
        Some(z) => Position::from([x, y, z]),
        None => Position::from([x, y]),
    })
}

fn positions(v: &Value, at: &str, dims: Dims) -> Result<Vec<Position>, GeometryError> {
    let a = v
        .as_array()
        .ok_or_else(|| malformed(at, "is not an array"))?;
    a.iter()
        .enumerate()
        .map(|(i, p)| position(p, &format!("{at}[{i}]"), dims))
        .collect()
}

fn parts(v: &Value, at: &str, dims: Dims) -> Result<Vec<Vec<Position>>, GeometryError> {
    let a = v
        .as_array()
        .ok_or_else(|| malformed(at, "is not an array"))?;
    a.iter()
        .enumerate()
        .map(|(i, p)| positions(p, &format!("{at}[{i}]"), dims))
        .collect()
}

fn polyline(paths: &Value, dims: Dims) -> Result<Option<GeometryValue>, GeometryError> {
    let mut lines: Vec<Vec<Position>> = parts(paths, "paths", dims)?;
    lines.retain(|l| l.len() >= 2);
    Ok(match lines.len() {
        0 => None,
        1 => lines
            .pop()
            .map(|coordinates| GeometryValue::LineString { coordinates }),
        _ => Some(GeometryValue::MultiLineString { coordinates: lines }),
    })
}

fn envelope(obj: &Map<String, Value>) -> Result<Option<GeometryValue>, GeometryError> {
    let get = |key: &str| number(obj.get(key).unwrap_or(&Value::Null), key);
    let (Some(x0), Some(y0), Some(x1), Some(y1)) =
        (get("xmin")?, get("ymin")?, get("xmax")?, get("ymax")?)
    else {
        return Ok(None);
    };
    let (xmin, xmax, ymin, ymax) = (x0.min(x1), x0.max(x1), y0.min(y1), y0.max(y1));
    // Counter-clockwise, as an RFC 7946 exterior ring.
    let ring = vec![
        Position::from([xmin, ymin]),
        Position::from([xmax, ymin]),
        Position::from([xmax, ymax]),
        Position::from([xmin, ymax]),
        Position::from([xmin, ymin]),
    ];
    Ok(Some(GeometryValue::Polygon {
        coordinates: vec![ring],
    }))
}

/// One ring: its positions as given (z kept) and its plane figure for geo.
struct Ring {
    positions: Vec<Position>,
    line: LineString<f64>,
    winding: WindingOrder,
    area: f64,
    bounds: Rect<f64>,
}

impl Ring {
    /// `None` for a ring without area (fewer than three distinct
    /// positions, or all on one line).
    fn new(mut positions: Vec<Position>) -> Option<Ring> {
        let (first, last) = (positions.first()?, positions.last()?);
        if (first[0], first[1]) != (last[0], last[1]) {
            let first = first.clone();
            positions.push(first);
        }
        let line: LineString<f64> = positions
            .iter()
            .map(|p| Coord { x: p[0], y: p[1] })
            .collect();
        let winding = line.winding_order()?;
        // The output may be either way round, so reversing must flip the
        // winding geo reads. It does not for a ring that touches itself at
        // its lowest-leftmost vertex (an invalid ring: which side is inside
        // is ambiguous), nor, near f64's limits, where it may be decidable
        // one way only; such a ring is dropped like one without area.
        let mut reversed = line.clone();
        reversed.0.reverse();
        if reversed.winding_order()? == winding {
            return None;
        }
        let bounds = line.bounding_rect()?;
        let area = Polygon::new(line.clone(), vec![]).unsigned_area();
        // An area that overflows (coordinates near f64's limits) is no
        // shape a consumer could draw, like one without area.
        (area > 0.0 && area.is_finite()).then_some(Ring {
            positions,
            line,
            winding,
            area,
            bounds,
        })
    }

    /// Whether this ring lies inside `outer`: its first vertex that is
    /// not on `outer`'s boundary is inside it (rings of a valid polygon
    /// do not cross, so one vertex decides; holes may touch their
    /// exterior, so vertices on the boundary say nothing).
    fn inside(&self, outer: &Ring) -> bool {
        let b = &outer.bounds;
        let (min, max) = (self.bounds.min(), self.bounds.max());
        if min.x < b.min().x || min.y < b.min().y || max.x > b.max().x || max.y > b.max().y {
            return false;
        }
        let shape = Polygon::new(outer.line.clone(), vec![]);
        self.line
            .coords()
            .map(|c| shape.coordinate_position(c))
            .find(|p| *p != CoordPos::OnBoundary)
            == Some(CoordPos::Inside)
    }

    /// The positions wound as asked (reversed when geo finds the ring
    /// wound the other way).
    fn wound(self, want: WindingOrder) -> Vec<Position> {
        let mut p = self.positions;
        if self.winding != want {
            p.reverse();
        }
        p
    }
}

fn polygon(rings: &Value, dims: Dims) -> Result<Option<GeometryValue>, GeometryError> {
    let rings: Vec<Ring> = parts(rings, "rings", dims)?
        .into_iter()
        .filter_map(Ring::new)
        .collect();
    // Largest first, so a ring's possible containers come before it; the
    // innermost of them is its parent. Even depth: an exterior (an island
    // in a hole is one too); odd depth: a hole of its parent. Esri's own
    // orientation is not trusted for this: a hole written clockwise is
    // still inside its exterior.
    let mut order: Vec<usize> = (0..rings.len()).collect();
    order.sort_by(|&a, &b| rings[b].area.total_cmp(&rings[a].area).then(a.cmp(&b)));
    let mut parent: Vec<Option<usize>> = vec![None; rings.len()];
    let mut depth = vec![0usize; rings.len()];
    for (k, &i) in order.iter().enumerate() {
        let container = order[..k]
            .iter()
            .rev()
            .copied()
            .find(|&j| rings[i].inside(&rings[j]));
        if let Some(j) = container {
            depth[i] = depth[j] + 1;
            parent[i] = Some(j);
        }
    }
    // Exteriors in the order they were written, each with its holes in
    // the order they were written.
    let mut exteriors: Vec<usize> = (0..rings.len())
        .filter(|&i| depth[i].is_multiple_of(2))
        .collect();
    exteriors.sort_unstable();
    let mut holes: Vec<Vec<usize>> = vec![Vec::new(); rings.len()];
    for i in 0..rings.len() {
        if let (true, Some(p)) = (!depth[i].is_multiple_of(2), parent[i]) {
            holes[p].push(i);
        }
    }
    let mut slots: Vec<Option<Ring>> = rings.into_iter().map(Some).collect();
    let mut polygons: Vec<Vec<Vec<Position>>> = Vec::with_capacity(exteriors.len());
    for e in exteriors {
        let mut poly = Vec::with_capacity(1 + holes[e].len());
        if let Some(r) = slots[e].take() {
            poly.push(r.wound(WindingOrder::CounterClockwise));
        }
        for &h in &holes[e] {
            if let Some(r) = slots[h].take() {
                poly.push(r.wound(WindingOrder::Clockwise));
            }
        }
        polygons.push(poly);
    }
    Ok(match polygons.len() {
        0 => None,
        1 => polygons
            .pop()
            .map(|coordinates| GeometryValue::Polygon { coordinates }),
        _ => Some(GeometryValue::MultiPolygon {
            coordinates: polygons,
        }),
    })
}
