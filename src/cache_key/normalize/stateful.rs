//! Whether a request's answer depends on state kept at the provider. Such an answer cannot be
//! replayed blindly: the state may have changed since (a conversation grew, a prompt got a new
//! version), and a replay skips the side effect the client asked for (a stored response, a
//! background job). `cache.stateful` decides what the proxy does with them.
//!
//! Each rule is listed, with its reason, in `STATEFUL_FIELDS` and in `docs/cache-key.md`.

use serde_json::Value;

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statefulness {
    /// The answer depends only on the request: cached normally.
    Pure,
    /// The answer depends on provider-side state or has a side effect there; the reason names
    /// the field.
    Stateful(&'static str),
}

/// When a top-level field makes a request stateful.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// Present and not `null`.
    Present,
    /// Exactly `true`.
    True,
    /// An object without a `version` member (or with a `null` one).
    Unversioned,
    /// An array holding an item whose `type` is the given string.
    ItemOfType(&'static str),
    /// An array of tools holding one that points at provider-side state: a `file_search`
    /// tool (vector stores change), or any tool naming an existing `container` by id.
    StatefulTool,
}

/// A field that makes a request stateful on some endpoints, and why.
pub struct StatefulField {
    /// Endpoints the rule applies to.
    pub endpoints: &'static [&'static str],
    /// Top-level member.
    pub name: &'static str,
    /// What value of it counts.
    pub trigger: Trigger,
    /// Why the answer depends on provider-side state (copied into docs/cache-key.md).
    pub reason: &'static str,
}

const RESPONSES: &[&str] = &["/v1/responses"];

/// Every rule, checked in order; the first that matches names the reason.
pub const STATEFUL_FIELDS: &[StatefulField] = &[
    StatefulField {
        endpoints: RESPONSES,
        name: "previous_response_id",
        trigger: Trigger::Present,
        reason: "previous_response_id: the answer continues a stored conversation the id only names",
    },
    StatefulField {
        endpoints: RESPONSES,
        name: "conversation",
        trigger: Trigger::Present,
        reason: "conversation: the answer continues a conversation that grows with every turn",
    },
    StatefulField {
        endpoints: RESPONSES,
        name: "prompt",
        trigger: Trigger::Unversioned,
        reason: "prompt without version: the latest version of a stored prompt can change at any time",
    },
    StatefulField {
        endpoints: RESPONSES,
        name: "background",
        trigger: Trigger::True,
        reason: "background: the answer is a queued job the client polls for, not the result",
    },
    StatefulField {
        endpoints: &["/v1/responses", "/v1/chat/completions"],
        name: "store",
        trigger: Trigger::True,
        reason: "store: the client asked the provider to keep this exchange for later retrieval",
    },
    StatefulField {
        endpoints: RESPONSES,
        name: "input",
        trigger: Trigger::ItemOfType("item_reference"),
        reason: "input item_reference: the input names items stored at the provider",
    },
    StatefulField {
        endpoints: RESPONSES,
        name: "tools",
        trigger: Trigger::StatefulTool,
        reason: "tools: file_search or a container id reads state that changes at the provider",
    },
    StatefulField {
        endpoints: &["/v1/messages"],
        name: "container",
        trigger: Trigger::Present,
        reason: "container: the answer runs in a code-execution container whose files persist",
    },
];

/// Decides whether the request to `endpoint` with `body` depends on provider-side state.
pub fn statefulness(endpoint: &str, body: &Value) -> Statefulness {
    for rule in STATEFUL_FIELDS.iter().filter(|r| r.endpoints.contains(&endpoint)) {
        let Some(value) = body.get(rule.name).filter(|v| !v.is_null()) else { continue };
        let hit = match rule.trigger {
            Trigger::Present => true,
            Trigger::True => value == &Value::Bool(true),
            Trigger::Unversioned => value.get("version").is_none_or(Value::is_null),
            Trigger::ItemOfType(kind) => {
                items(value).any(|item| item.get("type").and_then(Value::as_str) == Some(kind))
            }
            Trigger::StatefulTool => items(value).any(|tool| {
                tool.get("type").and_then(Value::as_str) == Some("file_search")
                    || tool.get("container").is_some_and(Value::is_string)
            }),
        };
        if hit {
            return Statefulness::Stateful(rule.reason);
        }
    }
    Statefulness::Pure
}

fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn on(endpoint: &str, body: Value) -> bool {
        matches!(statefulness(endpoint, &body), Statefulness::Stateful(_))
    }

    #[test]
    fn each_rule_fires_and_its_harmless_values_do_not() {
        let r = "/v1/responses";
        assert!(on(r, json!({"previous_response_id": "resp_1"})));
        assert!(!on(r, json!({"previous_response_id": null})));
        assert!(on(r, json!({"conversation": "conv_1"})));
        assert!(on(r, json!({"conversation": {"id": "conv_1"}})));
        assert!(on(r, json!({"prompt": {"id": "pmpt_1"}})));
        assert!(!on(r, json!({"prompt": {"id": "pmpt_1", "version": "3"}})));
        assert!(on(r, json!({"background": true})));
        assert!(!on(r, json!({"background": false})));
        assert!(on(r, json!({"store": true})));
        assert!(!on(r, json!({"store": false})));
        assert!(on("/v1/chat/completions", json!({"store": true})));
        assert!(on(r, json!({"input": [{"type": "item_reference", "id": "msg_1"}]})));
        assert!(!on(r, json!({"input": "hello"})));
        assert!(on(r, json!({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]})));
        assert!(on(r, json!({"tools": [{"type": "code_interpreter", "container": "cntr_1"}]})));
        assert!(!on(r, json!({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]})));
        assert!(on("/v1/messages", json!({"container": "container_1"})));
        assert!(!on("/v1/messages", json!({"store": true})), "not an Anthropic field: the provider refuses it");
        assert!(!on("/v1/embeddings", json!({"store": true})));
    }
}
