//! The HTTP API and the dashboard, bound to 127.0.0.1 only.
//!
//! - [`router`] builds the routes over an [`AppState`]; [`serve`] runs them
//!   on a listener the caller bound, until a shutdown future resolves.
//! - `api`: the JSON API (the original's contract plus runs and tools).
//! - `auth`: who is calling and who may do what.
//! - `error`: the one mapping of errors to HTTP answers; the JSON extractor.
//! - `dashboard`: the operator's pages at `/` and under `/dashboard/`.
//!
//! Every handler runs its use case in `spawn_blocking` (git2, SQLite and
//! signing block); a 2xx is sent only once the audit entry is durable.

use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::app::error::AppError;
use crate::app::service::Service;
use crate::app::tokens::Secret;

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod hooks;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub svc: Arc<Service>,
    pub operator_token: Secret,
    pub runner_token: Secret,
    /// What a forge signs `POST /hooks/forge` with (`[remote]
    /// webhook_secret_file`).
    pub webhook_secret: Secret,
    /// The dashboard's login codes and sessions.
    pub dashboard: Arc<dashboard::session::Sessions>,
    /// The port the server listens on, for the Host and Origin checks
    /// (0 until [`serve`] knows it: then any port is accepted).
    port: Arc<AtomicU16>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("port", &self.port())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        svc: Arc<Service>,
        operator_token: Secret,
        runner_token: Secret,
        webhook_secret: Secret,
    ) -> Self {
        AppState {
            svc,
            operator_token,
            runner_token,
            webhook_secret,
            dashboard: Arc::new(dashboard::session::Sessions::new()),
            port: Arc::new(AtomicU16::new(0)),
        }
    }

    /// Opens the service, the operator's and runner's tokens and the
    /// webhook secret (creating each file, 0600, when missing).
    pub fn open(settings: &crate::config::Settings) -> Result<AppState, AppError> {
        let svc = Arc::new(Service::open(settings)?);
        let op = crate::app::tokens::load_or_create(&settings.operator_token_path(), "gov_op")
            .map_err(AppError::internal)?;
        let runner =
            crate::app::tokens::load_or_create(&settings.runner_token_path(), "gov_runner")
                .map_err(AppError::internal)?;
        let hook = crate::app::tokens::load_or_create(&settings.webhook_secret_file, "gov_hook")
            .map_err(AppError::internal)?;
        Ok(AppState::new(svc, op, runner, hook))
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    pub fn set_port(&self, port: u16) {
        self.port.store(port, Ordering::Relaxed);
    }
}

impl axum::extract::FromRef<AppState> for Arc<dashboard::session::Sessions> {
    fn from_ref(state: &AppState) -> Self {
        state.dashboard.clone()
    }
}

/// Runs blocking work (Git, SQLite, signing) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, error::ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(error::ApiError),
        Err(e) => Err(error::ApiError(AppError::internal(format!(
            "worker failed: {e}"
        )))),
    }
}

/// Runs a state change off the async runtime. Concurrent writers are not
/// queued here: they meet in the write path, which commits them in batches
/// (`app::governance`).
pub async fn blocking_write<T: Send + 'static>(
    _state: &AppState,
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, error::ApiError> {
    blocking(f).await
}

/// The routes over `state`.
pub fn router(state: AppState) -> Router {
    api::routes()
        .merge(hooks::routes())
        .merge(dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard_host_and_origin,
        ))
        .with_state(state)
}

/// The largest request body read (axum's own default limit).
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Reads the whole request body before any handler runs, within `[server]
/// body_read_timeout_seconds` of the head: a client that sends its body
/// slowly (or not at all) gets 408 and its connection closed, and nothing
/// is written.
async fn read_body_in_time(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.svc.settings().body_read_timeout;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_large =
                crate::domain::errors::error_chain(&e).contains("length limit exceeded");
            let (status, detail) = match too_large {
                true => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {MAX_BODY_BYTES} bytes"),
                ),
                false => (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                ),
            };
            (status, axum::Json(serde_json::json!({ "detail": detail }))).into_response()
        }
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            axum::Json(serde_json::json!({"detail": "the request body did not arrive in time"})),
        )
            .into_response(),
    }
}

fn host_allowed(host: &str, port: u16) -> bool {
    let (name, p) = match host.rsplit_once(':') {
        Some((n, p)) => (n, p.parse::<u16>().ok()),
        None => (host, None),
    };
    if !matches!(name, "127.0.0.1" | "localhost") {
        return false;
    }
    match (port, p) {
        (0, _) => true,
        (port, Some(p)) => p == port,
        (_, None) => false,
    }
}

/// DNS rebinding and cross-site requests: the Host must be the loopback
/// address and port; a state change must not come from a foreign Origin.
async fn guard_host_and_origin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let port = state.port();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, port) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            axum::Json(crate::wire::ErrorReply::message(
                "this server answers only to 127.0.0.1 and localhost",
            )),
        )
            .into_response();
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|h| host_allowed(h, port));
            if !ok {
                return (
                    StatusCode::FORBIDDEN,
                    axum::Json(crate::wire::ErrorReply::message(
                        "cross-origin requests may not change anything",
                    )),
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

/// How long requests in flight may take to finish once shutdown began.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `state` on `listener` until `shutdown` resolves, then finishes
/// the requests in flight (for at most [`SHUTDOWN_GRACE`]).
///
/// Each connection must send a whole request head within
/// `[server] header_read_timeout_seconds`, also between requests on a
/// kept-alive connection: slow or idle clients are closed, not held.
/// Bounds the C allocator's arenas and keeps large blocks out of them,
/// for a process that serves for weeks. Every request runs its use case
/// on a thread of the blocking pool, and glibc gives each thread that
/// allocates under contention an arena of its own (up to eight per core),
/// each keeping the memory freed into it; and once a large block has been
/// freed, glibc serves blocks up to that size (up to 32 MiB) from the
/// arenas instead of mapping them, so one maintenance pass (buffers the
/// size of a pack) raised resident memory for good. Writers run one at a
/// time (group commit), so two arenas cost them nothing; blocks of 128 KiB
/// or more are mapped and returned when freed. Call it before the runtime
/// starts threads.
#[allow(
    unsafe_code,
    reason = "mallopt has no safe wrapper; it takes two integers and only tunes the allocator"
)]
pub fn bound_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes an allocator setting; it touches no memory
    // of ours, and glibc serialises it with allocation.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Gives the memory the C allocator holds freed back to the system. A
/// maintenance pass reads and writes buffers the size of the packs it
/// merges; once freed, glibc kept most of that in its arenas, and the
/// server's resident memory crept up over a long run although what it
/// held live did not grow (heaptrack: 17 KiB more over 70,000 writes).
#[allow(
    unsafe_code,
    reason = "malloc_trim has no safe wrapper; it only returns free memory"
)]
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory glibc holds free; it
    // touches no allocation of ours, and glibc serialises it with
    // allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let port = listener.local_addr()?.port();
    state.set_port(port);
    let header_timeout = state.svc.settings().header_read_timeout;
    let maintenance = tokio::spawn(maintain_in_background(state.svc.clone()));
    let refs = tokio::spawn(pack_refs_in_background(state.svc.clone()));
    // Approvals' files reach a checked-out `main` from here, not before
    // each approval's answer.
    state.svc.governance().follow_checkout_in_background();
    let checkout = tokio::spawn(follow_checkout(state.svc.clone()));
    let svc = state.svc.clone();
    // Files for the writers' flushes, made ahead on a thread of their own.
    let spare_files = match state.svc.governance().keep_spare_files() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no spare files: writers create their own");
            None
        }
    };
    // Signature nonces for the audit entries, made ahead on a thread of
    // their own from the first entry on.
    state.svc.governance().make_nonces_ahead();
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    maintenance.abort();
    refs.abort();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at shutdown were dropped");
    }
    checkout.abort();
    // The last approvals' files, before the server is gone.
    let _ = tokio::task::spawn_blocking(move || {
        svc.governance().sync_checkout();
        // A long merge's new pack is put in place before the server is
        // gone (killed, the next pass merges its packs again), and no pass
        // still running starts another.
        svc.governance().stop_long_merges();
    })
    .await;
    drop(spare_files);
    Ok(())
}

/// How often the server looks for approvals' files to put into a
/// checked-out `main` (see `Governance::sync_checkout_if_due`, which also
/// spaces the syncs by their cost): often, so that a file is there about
/// as soon as it was when each approval put its own there, and a server
/// killed meanwhile leaves few out. A look with nothing to do takes a
/// lock and reads a count.
const CHECKOUT_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs `job` on a blocking thread every `period` (counted from the end
/// of its last run) for as long as the server runs. A job logs what it
/// did and what failed; `what` names it should it panic.
async fn every(
    period: std::time::Duration,
    svc: Arc<Service>,
    what: &'static str,
    job: fn(&Service),
) {
    loop {
        tokio::time::sleep(period).await;
        let svc = svc.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || job(&svc)).await {
            tracing::warn!(error = %e, "{what} failed");
        }
    }
}

/// Milliseconds, for the debug log.
fn ms(took: std::time::Duration) -> f64 {
    took.as_secs_f64() * 1e3
}

/// Puts approvals' files into the working tree and its Git index while
/// the server runs, many approvals' at a time: the Git index is written
/// whole, so its cost grows with the files on `main`.
async fn follow_checkout(svc: Arc<Service>) {
    every(CHECKOUT_EVERY, svc, "following the checkout", |svc| {
        svc.governance().sync_checkout_if_due();
    })
    .await
}

/// How often the server checks whether the repository needs maintenance.
/// Often, so that each merge is small: a batch that flushes while a pass
/// writes its pack waits for the pass's bytes too, and a larger merge is
/// a longer wait (every 300 ms, the submissions' p99 on a new file system
/// was 24 ms; every 100 ms, 18; every 50 ms, 14: docs/BENCHMARKS.md, the
/// thirty-seventh round). A look still checks and checkpoints the index
/// and lists the pack folder when there is nothing to merge: about 2%
/// more of the server's CPU per submission than every 100 ms.
const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// A checkpoint of the index this long or longer is logged (debug).
const SLOW_CHECKPOINT: std::time::Duration = std::time::Duration::from_millis(5);

/// Packs loose objects and merges small packs while the server runs
/// (`store::maintain`; refs apart, [`pack_refs_in_background`]), never
/// holding writers up, checkpoints the index's write-ahead log and lets go of
/// repository handles kept past their age (so that none holds a pack a
/// pass deleted). A failed pass is logged and tried again later.
async fn maintain_in_background(svc: Arc<Service>) {
    // The index's log is checkpointed here, not in a batch's commit.
    if let Err(e) = svc.governance().defer_index_checkpoints() {
        tracing::warn!(error = %e, "the index checkpoints in its writers' commits");
    }
    every(MAINTAIN_EVERY, svc, "maintenance", maintenance_pass).await
}

/// One look of [`maintain_in_background`].
fn maintenance_pass(svc: &Service) {
    // An index changed outside gov is not served for long.
    if let Err(e) = svc.check_index() {
        tracing::warn!(error = %e, "cannot check the index");
    }
    let gov = svc.governance();
    let began = std::time::Instant::now();
    match gov.checkpoint_index() {
        // Slow ones only: one every 50 ms otherwise.
        Ok(Some((frames, copied))) if began.elapsed() >= SLOW_CHECKPOINT => {
            tracing::debug!(
                frames,
                copied,
                ms = ms(began.elapsed()),
                "slow index checkpoint"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot checkpoint the index"),
    }
    if gov.maintenance_due() {
        let began = std::time::Instant::now();
        match gov.maintain() {
            Ok(r) => tracing::debug!(?r, ms = ms(began.elapsed()), "maintenance pass"),
            Err(e) => {
                tracing::warn!(error = %crate::domain::errors::error_chain(&e), "maintenance failed")
            }
        }
        return_freed_memory();
    }
    // After the pass: the packs it deleted are let go of within a second
    // of a handle's last use, not at its next use.
    svc.let_go_of_old_handles();
}

/// Packs loose refs while the server runs, on a schedule of their own
/// (`Governance::pack_refs_if_due`), apart from the passes that merge
/// packs: a refs step of seconds no longer holds the merges up.
async fn pack_refs_in_background(svc: Arc<Service>) {
    every(MAINTAIN_EVERY, svc, "packing refs", |svc| {
        let began = std::time::Instant::now();
        match svc.governance().pack_refs_if_due() {
            // A look that found nothing to pack is not logged: one a
            // second otherwise.
            Ok(Some(packed)) if packed > 0 => {
                tracing::debug!(packed, ms = ms(began.elapsed()), "refs step")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::domain::errors::error_chain(&e), "packing refs failed")
            }
        }
    })
    .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_loopback_hosts_on_our_port() {
        assert!(host_allowed("127.0.0.1:8005", 8005));
        assert!(host_allowed("localhost:8005", 8005));
        assert!(!host_allowed("127.0.0.1:8006", 8005));
        assert!(!host_allowed("evil.example:8005", 8005));
        assert!(!host_allowed("127.0.0.1", 8005));
        assert!(!host_allowed("", 8005));
        assert!(host_allowed("localhost", 0));
    }
}
