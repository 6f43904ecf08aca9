//! Operations: liveness, readiness and metrics.

use super::*;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if let Err(e) = s.game.ledger.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("ledger: {e}")).into_response();
    }
    if let Err(e) = s.fleet.ready().await {
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    "ready".into_response()
}

/// `/metrics` on the main listener, unless `--metrics-listen` moved it (then it is a 404 here).
pub(super) fn metrics_here(state: &AppState) -> Router<Arc<AppState>> {
    match state.metrics_listen {
        Some(_) => Router::new(),
        None => Router::new().route("/metrics", get(metrics)),
    }
}

/// What `--metrics-listen` serves: `/metrics` and nothing else.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

pub(super) async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    metrics::gauge!("crashfleet_ws_connections").set(s.connections.load(Ordering::Relaxed) as f64);
    process_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// The process's resident memory and open file descriptors, read from /proc at scrape time (Linux;
/// elsewhere they are simply absent). Load runs divide the memory by the connection count.
pub(super) fn process_metrics() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        metrics::gauge!("process_resident_memory_bytes").set(kib * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
}
