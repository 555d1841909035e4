//! Errors a client receives, shaped in its own dialect so its SDK raises its usual exception:
//! OpenAI `{"error":{"message","type","code"}}`, Anthropic `{"type":"error","error":{"type","message"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::cache_key::normalize::Dialect;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("request body is larger than the limit of {limit} bytes (max_request_bytes)")]
    TooLarge { limit: u64 },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("request has no `model` field")]
    MissingModel,
    #[error("no configured provider serves model `{model}` on {path}; add its name to a provider's `models`")]
    UnknownModel { model: String, path: String },
    #[error("{0}")]
    BadHeader(String),
    #[error("replay mode: no answer recorded for this request (address {address})")]
    NotRecorded { address: String },
    #[error("upstream {provider} is unreachable ({reason}) and no stored answer can be served")]
    UpstreamUnavailable { provider: String, reason: String },
    #[error("upstream {provider} timed out ({reason}) and no stored answer can be served")]
    UpstreamTimeout { provider: String, reason: String },
    #[error("upstream {provider} sent an invalid answer ({reason}) and no stored answer can be served")]
    UpstreamInvalid { provider: String, reason: String },
    #[error("unsupported path {0}")]
    UnsupportedPath(String),
    #[error(transparent)]
    Credential(#[from] crate::edge::credential::CredentialError),
    #[error("this Holdfast accepts only its own client keys: send one as `Authorization: Bearer …` or `x-api-key`")]
    Unauthorized,
    #[error("holdfast is answering as many requests as it may (limits.max_in_flight); retry shortly")]
    Overloaded,
    #[error("holdfast is receiving as many request bytes as it may (limits.max_body_buffer); retry shortly")]
    BodiesOverloaded,
    #[error("{0}")]
    BodyTimeout(String),
    #[error(
        "replay mode: a stateful request ({reason}) is never answered from the store; set cache.stateful = \"serve-stale\" to replay it"
    )]
    StatefulNotReplayed { reason: &'static str },
    #[error("replay mode: {0} is passed through to providers, never recorded, so replay cannot answer it")]
    NotRecordedPath(String),
    #[error("no {dialect} provider is configured to pass {path} through to; add one to [[providers]]")]
    NoProvider { dialect: &'static str, path: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::NotAnObject
            | Self::MissingModel
            | Self::BadHeader(_)
            | Self::Credential(_)
            | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Overloaded | Self::BodiesOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownModel { .. }
            | Self::NotRecorded { .. }
            | Self::UnsupportedPath(_)
            | Self::StatefulNotReplayed { .. }
            | Self::NoProvider { .. }
            | Self::NotRecordedPath(_) => StatusCode::NOT_FOUND,
            Self::UpstreamUnavailable { .. } | Self::UpstreamInvalid { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short class of the error (OpenAI's `code`), e.g. for a trace's `error.type`.
    pub fn code(&self) -> &'static str {
        self.kinds().2
    }

    /// OpenAI's `error.type` / Anthropic's `error.type`, and OpenAI's `code`.
    fn kinds(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::TooLarge { .. } => ("invalid_request_error", "request_too_large", "request_too_large"),
            Self::UnknownModel { .. } => ("invalid_request_error", "not_found_error", "model_not_found"),
            Self::NotRecorded { .. } | Self::StatefulNotReplayed { .. } | Self::NotRecordedPath(_) => {
                ("invalid_request_error", "not_found_error", "not_recorded")
            }
            Self::UnsupportedPath(_) | Self::NoProvider { .. } => {
                ("invalid_request_error", "not_found_error", "unsupported_path")
            }
            Self::UpstreamUnavailable { .. } => ("api_error", "api_error", "upstream_unavailable"),
            Self::UpstreamTimeout { .. } => ("api_error", "timeout_error", "upstream_timeout"),
            Self::UpstreamInvalid { .. } => ("api_error", "api_error", "upstream_invalid"),
            Self::Unauthorized => ("invalid_request_error", "authentication_error", "invalid_api_key"),
            Self::Overloaded | Self::BodiesOverloaded => ("server_error", "overloaded_error", "overloaded"),
            Self::BodyTimeout(_) => ("invalid_request_error", "timeout_error", "request_timeout"),
            _ => ("invalid_request_error", "invalid_request_error", "invalid_request"),
        }
    }

    pub fn into_dialect_response(self, dialect: Dialect) -> Response {
        let status = self.status();
        let (openai_type, anthropic_type, code) = self.kinds();
        let message = self.to_string();
        // The rest of the body was never read, so the connection cannot carry another request:
        // closing it gives its memory back at once.
        let close = matches!(self, Self::BodiesOverloaded | Self::TooLarge { .. } | Self::BodyTimeout(_));
        let body = match dialect {
            Dialect::OpenAi => {
                serde_json::json!({"error": {"message": message, "type": openai_type, "code": code, "param": null}})
            }
            Dialect::Anthropic => {
                serde_json::json!({"type": "error", "error": {"type": anthropic_type, "message": message}})
            }
        };
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        if close {
            response.headers_mut().insert("connection", HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_dialect_gets_its_own_error_shape() {
        let e = || ApiError::NotRecorded { address: "ab".into() };
        let openai = e().into_dialect_response(Dialect::OpenAi);
        assert_eq!(openai.status(), 404);
        let v = body_of(openai).await;
        assert_eq!(v["error"]["code"], "not_recorded");
        assert!(v["error"]["message"].as_str().unwrap().contains("replay mode"));
        let anthropic = e().into_dialect_response(Dialect::Anthropic);
        let v = body_of(anthropic).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
    }
}
