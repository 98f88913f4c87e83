//! The HTTP side of the hub: the only module that touches axum.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::HubState;

/// The answer of `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    nodes_online: usize,
    nodes_total: usize,
}

async fn health(
    State(state): State<Arc<HubState>>,
) -> Result<Json<Health>, (axum::http::StatusCode, &'static str)> {
    let nodes = state.db.list_nodes().await.map_err(|err| {
        tracing::error!(%err, "health check cannot read the database");
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable",
        )
    })?;
    Ok(Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        nodes_online: state.registry.online_nodes().len(),
        nodes_total: nodes
            .iter()
            .filter(|node| node.revoked_at.is_none())
            .count(),
    }))
}

/// The hub's HTTP routes.
pub fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}
