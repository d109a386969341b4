//! Route normalisation: a request path becomes a low-cardinality `http_route` by collapsing
//! numeric ids, UUIDs and hex hashes into placeholders, and [`RouteCap`] bounds the number of
//! distinct routes per service.
//!
//! Must not: keep query strings (the kernel never sends them) or invent structure it cannot
//! see (segments that are none of the above stay as they are; the cap bounds them).

use std::collections::{HashMap, HashSet};

/// Placeholder for all-digit segments.
pub const ID: &str = "{id}";
/// Placeholder for UUID segments.
pub const UUID: &str = "{uuid}";
/// Placeholder for hex hashes (8+ hex digits with at least one digit, or 16+).
pub const HASH: &str = "{hash}";
/// Last segment of a path the kernel cut at its length limit.
pub const TRUNCATED: &str = "{truncated}";
/// The route of every request beyond a service's distinct-route cap.
pub const OVERFLOW: &str = "{other}";

/// Normalises a request path (origin-form or absolute-form) into a route.
pub fn normalise(path: &str, truncated: bool) -> String {
    let path = strip_authority(path);
    if path == "*" {
        return "*".to_owned();
    }
    let mut segments: Vec<&str> = path.split('/').collect();
    if truncated && segments.len() > 1 {
        // The last segment is cut somewhere in the middle.
        segments.pop();
        segments.push(TRUNCATED);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(classify(segment));
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// `http://host:port/p` → `/p`; anything else unchanged.
fn strip_authority(path: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = path.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    path
}

fn classify(segment: &str) -> &str {
    if segment.is_empty() || segment == TRUNCATED {
        return segment;
    }
    let bytes = segment.as_bytes();
    if bytes.iter().all(u8::is_ascii_digit) {
        return ID;
    }
    if is_uuid(bytes) {
        return UUID;
    }
    if bytes.iter().all(u8::is_ascii_hexdigit)
        && (bytes.len() >= 16 || (bytes.len() >= 8 && bytes.iter().any(u8::is_ascii_digit)))
    {
        return HASH;
    }
    segment
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Bounds the distinct routes kept per service; routes beyond the cap become [`OVERFLOW`].
#[derive(Debug)]
pub struct RouteCap {
    limit: usize,
    routes: HashMap<String, HashSet<String>>,
    /// Requests whose route was replaced by [`OVERFLOW`].
    pub overflowed: u64,
}

impl RouteCap {
    /// A cap of `limit` distinct routes per service.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            routes: HashMap::new(),
            overflowed: 0,
        }
    }

    /// The route to use for `route` of `service`.
    pub fn admit(&mut self, service: &str, route: String) -> String {
        let known = self.routes.entry(service.to_owned()).or_default();
        if known.contains(&route) {
            return route;
        }
        if known.len() >= self.limit {
            self.overflowed += 1;
            return OVERFLOW.to_owned();
        }
        known.insert(route.clone());
        route
    }

    /// The cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Forgets a service (its series expired).
    pub fn forget(&mut self, service: &str) {
        self.routes.remove(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_ids_uuids_and_hashes() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/9", "/users/{id}/orders/{id}"),
            (
                "/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301/x",
                "/items/{uuid}/x",
            ),
            ("/blob/d41d8cd98f00b204e9800998ecf8427e", "/blob/{hash}"),
            ("/commit/a1b2c3d4", "/commit/{hash}"),
            // Words made of hex letters only stay (no digit, shorter than 16).
            ("/cafe/deadbeef", "/cafe/deadbeef"),
            ("/api/v1/users", "/api/v1/users"),
            ("/static/app.js", "/static/app.js"),
            ("/users/", "/users/"),
            ("http://example.com:8080/users/5", "/users/{id}"),
            ("https://example.com", "/"),
            ("*", "*"),
        ];
        for (path, want) in cases {
            assert_eq!(normalise(path, false), want, "{path}");
        }
    }

    #[test]
    fn truncated_paths_lose_their_partial_segment() {
        assert_eq!(
            normalise("/reports/2024/very-long-na", true),
            "/reports/{id}/{truncated}"
        );
    }

    #[test]
    fn cap_bounds_distinct_routes_per_service() {
        let mut cap = RouteCap::new(2);
        assert_eq!(cap.admit("a", "/x".into()), "/x");
        assert_eq!(cap.admit("a", "/y".into()), "/y");
        assert_eq!(cap.admit("a", "/z".into()), OVERFLOW);
        // Known routes stay admitted; other services have their own budget.
        assert_eq!(cap.admit("a", "/x".into()), "/x");
        assert_eq!(cap.admit("b", "/z".into()), "/z");
        assert_eq!(cap.overflowed, 1);
        cap.forget("a");
        assert_eq!(cap.admit("a", "/z".into()), "/z");
    }
}
