//! `GET /v1/info`: the whole deployment at a glance — nodes, connections, users, runs, rates.

use super::{ApiFailure, Operator};
use crate::AppState;
use crate::engine::NodeReport;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// One node, as it last reported (the answering node: right now).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Random per process start.
    pub id: String,
    /// Herald version it runs.
    pub version: String,
    /// When it started (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// Open client connections (WebSocket and SSE).
    pub connections: usize,
    /// Users with at least one open connection there.
    pub users: usize,
    /// Events appended through it per second (last 10 s).
    pub published_per_s: f64,
    /// Event frames it wrote per second (last 10 s).
    pub delivered_per_s: f64,
    /// Publishes it refused per run rule, last 5 minutes.
    pub rejected: BTreeMap<String, u64>,
}

/// Run counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunCounts {
    /// Started and not ended.
    pub active: usize,
    /// Active and silent for at least `run_stall_s`.
    pub stalled: usize,
}

/// The deployment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Info {
    /// Herald version of the answering node.
    pub version: String,
    /// `memory` or `redis`.
    pub engine: String,
    /// The answering node's id.
    pub node: String,
    /// Open connections, all nodes.
    pub connections: usize,
    /// Users online, summed over nodes (a user on two nodes counts twice).
    pub users: usize,
    /// Events appended per second, all nodes (last 10 s).
    pub published_per_s: f64,
    /// Event frames written per second, all nodes (last 10 s).
    pub delivered_per_s: f64,
    /// Publishes refused per run rule, all nodes, last 5 minutes.
    pub rejected: BTreeMap<String, u64>,
    /// Runs in progress.
    pub runs: RunCounts,
    /// Every live node, the answering one first.
    pub nodes: Vec<NodeInfo>,
}

/// Nodes, version, engine, connections, users, runs, and publish and delivery rates.
#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "operator",
    operation_id = "info",
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The deployment.", body = Info),
        (status = 401, response = super::responses::Unauthorized),
        (status = 429, response = super::responses::RateLimited),
        (status = 503, response = super::responses::NotReady),
    )
)]
pub async fn show(State(state): State<Arc<AppState>>, _: Operator) -> Result<Json<Info>, ApiFailure> {
    let reports = crate::node::all_reports(&state).await?;
    let (active, _) = state.engine.active_runs(Duration::ZERO, 0).await?;
    let (stalled, _) = state.engine.active_runs(state.config.run_stall, 0).await?;
    let mut rejected = BTreeMap::new();
    for report in &reports {
        for (rule, n) in &report.rejected {
            *rejected.entry(rule.clone()).or_default() += n;
        }
    }
    Ok(Json(Info {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        engine: state.engine.name().to_owned(),
        node: state.node.id.clone(),
        connections: reports.iter().map(|r| r.connections).sum(),
        users: reports.iter().map(|r| r.users).sum(),
        published_per_s: reports.iter().map(|r| r.published_per_s).sum(),
        delivered_per_s: reports.iter().map(|r| r.delivered_per_s).sum(),
        rejected,
        runs: RunCounts { active, stalled },
        nodes: reports.into_iter().map(node_info).collect(),
    }))
}

fn node_info(r: NodeReport) -> NodeInfo {
    NodeInfo {
        id: r.id,
        version: r.version,
        started_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(r.started_at_ms))
            .to_string(),
        connections: r.connections,
        users: r.users,
        published_per_s: r.published_per_s,
        delivered_per_s: r.delivered_per_s,
        rejected: r.rejected,
    }
}
