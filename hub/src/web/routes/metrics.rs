//! `GET /metrics`: the hub's metrics for Prometheus, to the addresses `[metrics] allow` lists
//! (loopback by default) and to a scraper presenting `[metrics] token_file`'s bearer token.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::HubState;
use crate::config::MetricsAccess;
use crate::metrics::{CONTENT_TYPE, Now, metrics};
use crate::web::identity::ClientAddr;

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new().route(crate::web::identity::METRICS_PATH, get(scrape))
}

async fn scrape(
    State(state): State<Arc<HubState>>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let bearer = crate::web::identity::bearer(&headers);
    if !may_scrape(&state.config.metrics, address, bearer) {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to the addresses in [metrics] allow, or with its bearer token\n",
        )
            .into_response();
    }
    let pool = state.db.pool();
    let now = Now {
        agents_connected: state.registry.online_nodes().len(),
        console_sessions: state.consoles.list().len(),
        db_connections: pool.size(),
        db_idle_connections: pool.num_idle(),
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics().render(now),
    )
        .into_response()
}

/// Whether a scraper at `address`, presenting `bearer`, may read the metrics.
fn may_scrape(access: &MetricsAccess, address: std::net::IpAddr, bearer: Option<&str>) -> bool {
    access.allow.iter().any(|net| net.contains(address))
        || bearer.is_some_and(|token| access.token_matches(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_by_default_and_anyone_with_the_token() {
        let mut access = MetricsAccess::default();
        let outside: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert!(may_scrape(&access, "127.0.0.1".parse().unwrap(), None));
        assert!(may_scrape(&access, "::1".parse().unwrap(), None));
        assert!(!may_scrape(&access, outside, None));
        assert!(!may_scrape(&access, outside, Some("")));
        access = MetricsAccess::new(access.allow, Some("s3cret-token"));
        assert!(may_scrape(&access, outside, Some("s3cret-token")));
        assert!(!may_scrape(&access, outside, Some("s3cret-toke")));
        assert!(!may_scrape(&access, outside, Some("s3cret-token2")));
        access.allow = vec!["192.0.2.0/24".parse().unwrap()];
        assert!(may_scrape(&access, outside, None));
        assert!(!may_scrape(&access, "127.0.0.1".parse().unwrap(), None));
    }
}
