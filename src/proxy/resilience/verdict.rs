//! Which breaker an attempt's outcome counts against, and the permits that carry it there.

use crate::config::RetryConfig;
use crate::proxy::resilience::breaker::{Permit, Transition};
use crate::proxy::upstream::UpstreamFailure;

/// The two permits one attempt needs (the provider's and its model's), reported together.
/// Dropped unreported, both release their probe slots without a verdict.
#[derive(Debug)]
pub struct AttemptPermits {
    /// The provider-wide breaker (connection-level failures).
    pub provider: Permit,
    /// The provider + model breaker (status-level failures).
    pub model: Permit,
}

impl AttemptPermits {
    /// The attempt answered (for a stream: it ended properly).
    pub fn succeed(self) -> [Option<Transition>; 2] {
        [self.provider.report(Some(false)), self.model.report(Some(false))]
    }

    /// The attempt failed with `failure`; `retry` says whether the operator treats it as an
    /// outage (a status listed in `retry.statuses`).
    pub fn fail(self, failure: &UpstreamFailure, retry: &RetryConfig) -> [Option<Transition>; 2] {
        let (provider, model) = verdicts(failure, retry);
        [self.provider.report(provider), self.model.report(model)]
    }
}

/// `(provider, model)` verdicts for a failure: each failure counts against the breaker it
/// implicates and is neutral for the other; a deadline cut says nothing about the provider (the
/// client may have asked for a short one), and a verdict on the request means the provider is
/// up.
pub fn verdicts(failure: &UpstreamFailure, retry: &RetryConfig) -> (Option<bool>, Option<bool>) {
    let outage = failure.kind().is_some() || failure.is_retryable(retry);
    let cut_by_deadline = matches!(failure, UpstreamFailure::Timeout("deadline"));
    match (outage, cut_by_deadline, failure.is_provider_wide()) {
        (false, _, _) => (Some(false), Some(false)),
        (true, true, _) => (None, None),
        (true, false, true) => (Some(true), None),
        (true, false, false) => (None, Some(true)),
    }
}
