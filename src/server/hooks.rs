//! `POST /hooks/forge`: a forge (GitHub, Gitea, Forgejo: any that signs
//! GitHub-style) says the remote changed, and gov syncs at once instead of
//! on the watchdog's next pass.
//!
//! The caller is not an operator, runner or agent, so no bearer token: the
//! `X-Hub-Signature-256: sha256=<hex>` header, an HMAC-SHA256 of the raw
//! body under the secret in `[remote] webhook_secret_file`, is its proof.
//! It is checked in constant time before anything else happens.
//!
//! A signed `pull_request` event (`X-GitHub-Event: pull_request`) that
//! reports a merge (`action: closed`, `merged: true`) is evidence: who
//! merged (`pull_request.merged_by.login`, else `sender.login`) and the
//! commit the merge made (`merge_commit_sha`). It is recorded in the audit
//! chain before the sync, so that the approval names that person, and so
//! that a squash or rebase merge can be taken at all. Any other signed
//! event just means "sync now". Either way the sync's checks (see
//! `app::remote`) decide what the remote's state is worth.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{blocking_write, AppState};
use crate::app::error::AppError;
use crate::app::remote::{configured_remote, record_merge_evidence, sync, SyncReport};
use crate::domain::forge::{EvidenceError, PullRequestEvent};

/// The header that names the event.
pub const EVENT_HEADER: &str = "x-github-event";

/// The header a forge signs its call in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

pub fn routes() -> Router<AppState> {
    Router::new().route("/hooks/forge", post(forge))
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under
/// `secret`. The comparison takes the same time wherever the bytes differ.
pub fn signature_valid(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(given) = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    expected.as_slice().ct_eq(&given).into()
}

async fn forge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SyncReport>, ApiError> {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError(AppError::Unauthorized(
                "missing `X-Hub-Signature-256` header".into(),
            ))
        })?;
    if !signature_valid(state.webhook_secret.expose().as_bytes(), &body, signature) {
        return Err(ApiError(AppError::Unauthorized(
            "the signature does not match the body".into(),
        )));
    }
    configured_remote(state.svc.settings()).map_err(ApiError)?;
    let event = headers.get(EVENT_HEADER).and_then(|v| v.to_str().ok());
    let evidence = if event == Some("pull_request") {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        let parsed: PullRequestEvent = serde_path_to_error::deserialize(de).map_err(|e| {
            ApiError(AppError::Invalid {
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })
        })?;
        match parsed.merge_evidence() {
            Ok(ev) => Some(ev),
            Err(EvidenceError::NotAMerge(_)) => None,
            Err(EvidenceError::Field { field, problem }) => {
                return Err(ApiError(AppError::Invalid {
                    field: field.into(),
                    message: problem.into(),
                }))
            }
        }
    } else {
        None
    };
    let svc = state.svc.clone();
    let report = blocking_write(&state, move || {
        if let Some(ev) = &evidence {
            record_merge_evidence(&svc, ev)?;
        }
        sync(&svc)
    })
    .await?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_github_style_signature_is_checked() {
        // HMAC-SHA256("It's a Secret to Everybody", "Hello, World!"), from
        // GitHub's documentation of webhook signatures.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            sig
        ));
        assert!(!signature_valid(b"another secret", b"Hello, World!", sig));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "sha256="
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=abc"
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &sig[..sig.len() - 2]
        ));
    }
}
