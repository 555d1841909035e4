//! Asking the providers again for a stored request (`holdfast cache refresh`). The request goes
//! through the same exchange as a client's — routing, translation, retries, failover, breakers,
//! storing — with `Cache-Control: no-cache`, so a fresh answer replaces the stored one at the
//! same address and a failure leaves the stored one as it was.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use futures_util::StreamExt as _;

use super::AppState;
use super::request::Endpoint;
use crate::cache_key::normalize::NormalizedRequest;

/// How much of an error answer is kept to say why a refresh failed.
const ERROR_EXCERPT_CHARS: usize = 300;

/// What the exchange answered to a re-asked request.
#[derive(Debug)]
pub struct Reasked {
    /// The HTTP status the exchange answered with.
    pub status: u16,
    /// `x-holdfast-cache` of the answer: `miss` or `coalesced` when a provider answered.
    pub cache: Option<String>,
    /// `x-holdfast-key`: where the answer was stored.
    pub address: Option<String>,
    /// The start of the body, when the status is not a success.
    pub error: Option<String>,
}

impl Reasked {
    /// Whether a provider answered and the answer was stored in place of the old one.
    pub fn refreshed(&self) -> bool {
        (200..300).contains(&self.status) && matches!(self.cache.as_deref(), Some("miss" | "coalesced"))
    }
}

/// Sends `request` as a client without a credential of its own would (the providers'
/// `api_key_env` keys apply), waits for the whole answer — a stream is stored only once it has
/// ended — and says what came back. Holds a place among `limits.max_in_flight` meanwhile.
pub async fn reask(state: &AppState, request: &NormalizedRequest) -> Result<Reasked, String> {
    let endpoint = Endpoint::ALL
        .into_iter()
        .find(|e| e.path() == request.endpoint)
        .ok_or_else(|| format!("{} is not an endpoint whose answers are stored", request.endpoint))?;
    let uri: Uri = match request.query.as_str() {
        "" => endpoint.path().parse(),
        query => format!("{}?{query}", endpoint.path()).parse(),
    }
    .map_err(|e| format!("stored query does not form a URI: {e}"))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, item) in &request.headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|e| format!("stored header {name}: {e}"))?;
        let value = HeaderValue::try_from(item.as_str()).map_err(|e| format!("stored header {name}: {e}"))?;
        headers.append(name, value);
    }
    let _place = state.in_flight.clone().acquire_owned().await.map_err(|e| e.to_string())?;
    let body = Body::from(request.canonical.clone());
    let response = super::exchange::handle(state.clone(), endpoint, uri, headers, body).await;
    let status = response.status().as_u16();
    let text = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (cache, address) = (text("x-holdfast-cache"), text("x-holdfast-key"));
    let success = (200..300).contains(&status);
    let mut excerpt = Vec::new();
    let mut data = response.into_body().into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| format!("the answer broke off: {e}"))?;
        if !success && excerpt.len() < ERROR_EXCERPT_CHARS * 4 {
            excerpt.extend_from_slice(&chunk);
        }
    }
    let error = (!success).then(|| String::from_utf8_lossy(&excerpt).chars().take(ERROR_EXCERPT_CHARS).collect());
    Ok(Reasked { status, cache, address, error })
}
