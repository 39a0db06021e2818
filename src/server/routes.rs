//! Which listener serves which endpoint. One table: a path a listener does not serve is 404
//! there, whatever the method (so the callers' listener says nothing about the operations
//! endpoints), and a served path asked with another method is 405 with `Allow`.

use http::Method;

/// The endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Records,
    Activity,
    Healthz,
    Readyz,
    Metrics,
    AdminInvalidate,
}

/// Who a listener is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `--listen` when `--ops-listen` is set: callers only, `/sat/*`.
    Callers,
    /// `--ops-listen`: probes, scrapes and operators.
    Ops,
    /// `--listen` without `--ops-listen`: everything on one port.
    Both,
}

struct Entry {
    method: Method,
    path: &'static str,
    route: Route,
    ops: bool,
}

const fn entry(method: Method, path: &'static str, route: Route, ops: bool) -> Entry {
    Entry {
        method,
        path,
        route,
        ops,
    }
}

static TABLE: [Entry; 6] = [
    entry(Method::GET, "/sat/records", Route::Records, false),
    entry(Method::GET, "/sat/activity", Route::Activity, false),
    entry(Method::GET, "/healthz", Route::Healthz, true),
    entry(Method::GET, "/readyz", Route::Readyz, true),
    entry(Method::GET, "/metrics", Route::Metrics, true),
    entry(
        Method::POST,
        "/admin/ownership/invalidate",
        Route::AdminInvalidate,
        true,
    ),
];

/// Why a request has no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    /// The path is served here, with this method only.
    MethodNotAllowed(&'static Method),
}

pub fn route(side: Side, method: &Method, path: &str) -> Result<Route, NoRoute> {
    let served = |e: &&Entry| match side {
        Side::Both => true,
        Side::Callers => !e.ops,
        Side::Ops => e.ops,
    };
    let here = TABLE
        .iter()
        .filter(served)
        .find(|e| e.path == path)
        .ok_or(NoRoute::NotFound)?;
    if here.method == method {
        Ok(here.route)
    } else {
        Err(NoRoute::MethodNotAllowed(&here.method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_listener_serves_only_records_when_ops_has_its_own() {
        assert_eq!(route(Side::Callers, &Method::GET, "/sat/records"), Ok(Route::Records));
        assert_eq!(route(Side::Callers, &Method::GET, "/sat/activity"), Ok(Route::Activity));
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/admin/ownership/invalidate",
            "/",
            "/sat",
        ] {
            for m in [Method::GET, Method::POST, Method::HEAD] {
                assert_eq!(route(Side::Callers, &m, path), Err(NoRoute::NotFound), "{m} {path}");
            }
        }
    }

    #[test]
    fn the_ops_listener_serves_no_records() {
        assert_eq!(route(Side::Ops, &Method::GET, "/sat/records"), Err(NoRoute::NotFound));
        assert_eq!(route(Side::Ops, &Method::GET, "/sat/activity"), Err(NoRoute::NotFound));
        assert_eq!(route(Side::Ops, &Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(
            route(Side::Ops, &Method::POST, "/admin/ownership/invalidate"),
            Ok(Route::AdminInvalidate)
        );
    }

    #[test]
    fn a_served_path_with_another_method_is_405_with_its_method() {
        assert_eq!(
            route(Side::Both, &Method::GET, "/admin/ownership/invalidate"),
            Err(NoRoute::MethodNotAllowed(&Method::POST))
        );
        assert_eq!(
            route(Side::Both, &Method::DELETE, "/sat/records"),
            Err(NoRoute::MethodNotAllowed(&Method::GET))
        );
        assert_eq!(route(Side::Both, &Method::GET, "/nope"), Err(NoRoute::NotFound));
    }
}
