//! What every API request passes before its handler: one credential (never two different
//! ones), a client key when `[clients]` requires one, and a place among `limits.max_in_flight`.
//! Refusals are answered in the client's dialect and counted.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::errors::ApiError;
use crate::cache_key::normalize::Dialect;
use crate::edge::credential::client_credential;

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let dialect = Dialect::of_endpoint(request.uri().path());
    let credential = match client_credential(request.headers()) {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_dialect_response(dialect),
    };
    if state.client_keys.enabled() && !credential.is_some_and(|c| state.client_keys.accepts(c)) {
        state.metrics.count_unauthorized();
        return ApiError::Unauthorized.into_dialect_response(dialect);
    }
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.count_shed();
        return ApiError::Overloaded.into_dialect_response(dialect);
    };
    let response = next.run(request).await;
    // A stream is in flight until its last byte, not until its headers.
    response.map(|body| crate::edge::server::hold(body, permit))
}
