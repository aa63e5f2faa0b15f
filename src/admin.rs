//! The admin HTTP edge of `run` (DESIGN.md §9): probes and introspection.
//!
//! - `GET /healthz`: 200 while the service loop turns (it beats at every turn); 503 once it
//!   has not for `admin.liveness_timeout` (a hung loop: restart the process).
//! - `GET /readyz`: 200 once the consumer has joined its group, every assigned partition's
//!   session state is restored, a broker is reachable, no partition is stuck and the service
//!   reported its state within `admin.liveness_timeout`; 503 naming each reason otherwise.
//! - `GET /metrics`: the Prometheus scrape page ([`crate::telemetry`]).
//! - `GET /sessions/{deliveryExecutionId}`: the live state of a session owned by this
//!   instance (asked of the service loop, which holds it), with its input partition; 404
//!   when no partition of this instance holds it.
//!
//! Nothing here logs a session id: a delivery execution id holds the test taker's user id.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::kafka::runtime::{Heartbeat, Readiness, SessionQuery};

/// How long a session query may wait for the service loop.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints read: the service's readiness, and the way to ask it for a session.
#[derive(Debug, Clone)]
pub struct Admin {
    pub readiness: watch::Receiver<Readiness>,
    pub queries: mpsc::Sender<SessionQuery>,
    /// The Prometheus recorder's handle (`None`: `/metrics` answers 404).
    pub metrics: Option<PrometheusHandle>,
    /// The service loop's heartbeat, and how old it (and a readiness snapshot) may get
    /// (`admin.liveness_timeout`); `None`: `/healthz` answers while the process runs.
    pub liveness: Option<(Arc<Heartbeat>, Duration)>,
}

/// The routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/sessions/{id}", get(session))
        .with_state(admin)
}

/// Binds `address`; the returned future serves until `shutdown` completes. Gives the bound
/// address (port 0 picks a free one).
pub async fn bind(
    address: SocketAddr,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let serve = axum::serve(listener, router(admin)).with_graceful_shutdown(shutdown);
    Ok((bound, async move { serve.await }))
}

async fn healthz(State(admin): State<Admin>) -> (StatusCode, String) {
    match &admin.liveness {
        Some((heartbeat, timeout)) if heartbeat.age() > *timeout => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the service loop has not turned for {} s\n", heartbeat.age().as_secs()),
        ),
        _ => (StatusCode::OK, "ok\n".to_owned()),
    }
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, Json<Value>) {
    let readiness = admin.readiness.borrow().clone();
    let reasons = match &admin.liveness {
        Some((_, too_old)) => readiness.reasons_at(Instant::now(), *too_old),
        None => readiness.reasons(),
    };
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true, "assignedPartitions": readiness.assigned})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reasons": reasons})))
    }
}

async fn prometheus(State(admin): State<Admin>) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    match &admin.metrics {
        Some(handle) => (StatusCode::OK, [(header::CONTENT_TYPE, PROMETHEUS_TEXT)], handle.render()),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "no metrics recorder\n".to_owned()),
    }
}

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn session(State(admin): State<Admin>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    let (reply, answer) = oneshot::channel();
    if admin.queries.send(SessionQuery { id, reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the service is not running"})));
    }
    match tokio::time::timeout(QUERY_TIMEOUT, answer).await {
        Ok(Ok(Some(state))) => (StatusCode::OK, Json(state)),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no session with this id in the partitions this instance owns"})),
        ),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the service stopped"}))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the service did not answer in time"}))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(admin: &Admin, path: &str) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let response = router(admin.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn readiness_names_what_is_missing() {
        let (readiness, watched) = watch::channel(Readiness::default());
        let (queries, _answered) = mpsc::channel(1);
        let admin = Admin { readiness: watched, queries, metrics: None, liveness: None };
        let (status, body) = get(&admin, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reasons"], json!(["not in the consumer group yet"]));
        let joined = Readiness { joined: true, assigned: 3, ..Readiness::default() };
        readiness.send_replace(Readiness { restoring: 2, ..joined.clone() });
        let (status, body) = get(&admin, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reasons"], json!(["restoring the state of 2 of 3 partitions"]));
        let stuck = vec![crate::kafka::offsets::TopicPartition::new("acs.raw", 2)];
        readiness.send_replace(Readiness { brokers_down: true, stuck, ..joined.clone() });
        let (status, body) = get(&admin, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["reasons"],
            json!(["no Kafka broker reachable", "partition acs.raw[2] stuck: records left and no progress"])
        );
        readiness.send_replace(joined);
        assert_eq!(get(&admin, "/readyz").await, (StatusCode::OK, json!({"ready": true, "assignedPartitions": 3})));
        assert_eq!(get(&admin, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_loop_that_stopped_turning_is_neither_alive_nor_ready() {
        let heartbeat = Arc::new(Heartbeat::new());
        heartbeat.beat();
        let reported = Readiness { joined: true, assigned: 1, at: Some(Instant::now()), ..Readiness::default() };
        let (_readiness, watched) = watch::channel(reported);
        let (queries, _answered) = mpsc::channel(1);
        let alive = Admin {
            readiness: watched,
            queries,
            metrics: None,
            liveness: Some((heartbeat.clone(), Duration::from_secs(3600))),
        };
        assert_eq!(get(&alive, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(&alive, "/readyz").await.0, StatusCode::OK);
        // A heartbeat and a snapshot judged with no patience at all: too old (some time passes
        // between their creation and the request).
        let hung = Admin { liveness: Some((Arc::new(Heartbeat::new()), Duration::ZERO)), ..alive };
        let (status, body) = get(&hung, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, Value::Null, "a text body");
        let (status, body) = get(&hung, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["reasons"][0].as_str().unwrap().starts_with("the service has not reported its state"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_served_when_a_recorder_is_there() {
        let (_readiness, watched) = watch::channel(Readiness::default());
        let (queries, _answered) = mpsc::channel(1);
        let mut admin = Admin { readiness: watched, queries, metrics: None, liveness: None };
        assert_eq!(get(&admin, "/metrics").await.0, StatusCode::NOT_FOUND);
        // A recorder of this test's own (the global one belongs to the binary).
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        admin.metrics = Some(recorder.handle());
        metrics::with_local_recorder(&recorder, || {
            crate::telemetry::describe();
            metrics::counter!(crate::telemetry::COMMITS, "result" => "sent").increment(2);
        });
        use tower::ServiceExt;
        let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
        let response = router(admin).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROMETHEUS_TEXT);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("acs_stream_commits_total{result=\"sent\"} 2"), "{text}");
        assert!(text.contains("# HELP acs_stream_commits_total"), "{text}");
        assert!(text.contains("acs_stream_build_info{version="), "{text}");
    }

    #[tokio::test]
    async fn a_session_is_asked_of_the_service() {
        let (_readiness, watched) = watch::channel(Readiness::default());
        let (queries, mut asked) = mpsc::channel::<SessionQuery>(1);
        let admin = Admin { readiness: watched, queries, metrics: None, liveness: None };
        let service = tokio::spawn(async move {
            while let Some(query) = asked.recv().await {
                let found = (query.id == "u#d#h#acme").then(|| json!({"session": {"sequence": 4}}));
                let _ = query.reply.send(found);
            }
        });
        assert_eq!(
            get(&admin, "/sessions/u%23d%23h%23acme").await,
            (StatusCode::OK, json!({"session": {"sequence": 4}}))
        );
        assert_eq!(get(&admin, "/sessions/other").await.0, StatusCode::NOT_FOUND);
        service.abort();
        let _ = service.await;
        assert_eq!(get(&admin, "/sessions/other").await.0, StatusCode::SERVICE_UNAVAILABLE, "no service");
    }
}
