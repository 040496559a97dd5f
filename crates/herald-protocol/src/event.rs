//! The catalogue of agent events (docs/protocol.md, "Agent events and run rules") and the rules for their `data`.

use serde_json::{Map, Value};
use std::fmt;

/// One kind of agent event.
///
/// The set is closed on purpose: a typo in an event name is a 400 that lists the known names, not
/// an event every frontend silently ignores. Anything application-specific goes in `custom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Starts a run; must be the run's first event.
    AgentStarted,
    /// Free-form reasoning, e.g. `{"text": "…"}`.
    AgentThinking,
    /// A tool call begins; `tool_name` required.
    ToolExecuting,
    /// A tool call ends; must match an open `tool_executing`.
    ToolCompleted,
    /// Streamed answer text, `{"delta": "…"}`.
    AgentText,
    /// Free-form progress report.
    Progress,
    /// The run finished successfully (terminal).
    AgentCompleted,
    /// The run failed (terminal); `message` required.
    AgentError,
    /// The run was cancelled (terminal).
    AgentCancelled,
    /// Application-defined; `name` required, `run_id` optional.
    Custom,
    /// Appended by Herald itself when a run has been silent for `run_stall_s`; never published.
    RunStalled,
}

impl EventKind {
    /// Every kind, in documentation order, the server-only `run_stalled` last:
    /// `ALL[kind.index()] == kind`, so a table per kind (e.g. one metric handle each) is an array.
    pub const ALL: [EventKind; 11] = [
        EventKind::AgentStarted,
        EventKind::AgentThinking,
        EventKind::ToolExecuting,
        EventKind::ToolCompleted,
        EventKind::AgentText,
        EventKind::Progress,
        EventKind::AgentCompleted,
        EventKind::AgentError,
        EventKind::AgentCancelled,
        EventKind::Custom,
        EventKind::RunStalled,
    ];

    /// Every kind a publisher may send, in documentation order: all but `run_stalled`.
    pub const PUBLISHABLE: [EventKind; 10] = {
        let mut kinds = [EventKind::AgentStarted; 10];
        let mut i = 0;
        while i < kinds.len() {
            kinds[i] = Self::ALL[i];
            i += 1;
        }
        kinds
    };

    /// This kind's position in [`EventKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The wire name, e.g. `"agent_started"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentStarted => "agent_started",
            EventKind::AgentThinking => "agent_thinking",
            EventKind::ToolExecuting => "tool_executing",
            EventKind::ToolCompleted => "tool_completed",
            EventKind::AgentText => "agent_text",
            EventKind::Progress => "progress",
            EventKind::AgentCompleted => "agent_completed",
            EventKind::AgentError => "agent_error",
            EventKind::AgentCancelled => "agent_cancelled",
            EventKind::Custom => "custom",
            EventKind::RunStalled => "run_stalled",
        }
    }

    /// Parses a wire name, including the server-only `run_stalled`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Ends its run: nothing may follow it.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::AgentCompleted | EventKind::AgentError | EventKind::AgentCancelled)
    }

    /// Belongs to a run and so needs a `run_id` (all but `custom`).
    pub fn requires_run_id(self) -> bool {
        self != EventKind::Custom
    }

    /// Comma-separated list of publishable names, for error messages.
    pub fn known_names() -> String {
        Self::PUBLISHABLE.map(EventKind::as_str).join(", ")
    }

    /// Checks the `data` rules (docs/protocol.md, "Agent events and run rules") and names the first missing or mistyped field.
    pub fn check_data(self, data: &Map<String, Value>) -> Result<(), String> {
        let required: &[&str] = match self {
            EventKind::ToolExecuting | EventKind::ToolCompleted => &["tool_name"],
            EventKind::AgentError => &["message"],
            EventKind::Custom => &["name"],
            _ => &[],
        };
        for field in required {
            match data.get(*field) {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(Value::String(_)) => {
                    return Err(format!("data.{field} must not be empty for {self}"));
                }
                Some(_) => return Err(format!("data.{field} must be a string for {self}")),
                None => return Err(format!("data.{field} is required for {self}")),
            }
        }
        if let Some(v) = data.get("tool_call_id")
            && !v.is_string()
        {
            return Err(format!("data.tool_call_id must be a string for {self}"));
        }
        Ok(())
    }
}

/// In the OpenAPI document: a string, one of the publishable names.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EventKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("An agent event name (run_stalled is emitted by Herald only)."))
            .enum_values(Some(EventKind::PUBLISHABLE.map(EventKind::as_str)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EventKind {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventName".into()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_lists_every_kind_at_its_index() {
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
        }
        assert!(EventKind::PUBLISHABLE.iter().all(|k| EventKind::ALL[k.index()] == *k));
        assert!(!EventKind::PUBLISHABLE.contains(&EventKind::RunStalled));
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::PUBLISHABLE {
            assert_eq!(EventKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::from_name("run_stalled"), Some(EventKind::RunStalled));
        assert_eq!(EventKind::from_name("agent_start"), None);
    }

    #[test]
    fn data_rules_name_the_field() {
        let err = EventKind::ToolExecuting.check_data(&Map::new()).unwrap_err();
        assert!(err.contains("data.tool_name is required"), "{err}");
        let err = EventKind::AgentError.check_data(&obj(json!({"message": 3}))).unwrap_err();
        assert!(err.contains("data.message must be a string"), "{err}");
        let err = EventKind::Custom.check_data(&obj(json!({"name": ""}))).unwrap_err();
        assert!(err.contains("data.name must not be empty"), "{err}");
        assert!(EventKind::AgentThinking.check_data(&Map::new()).is_ok());
        assert!(
            EventKind::ToolCompleted
                .check_data(&obj(json!({"tool_name": "s", "tool_call_id": "c1"})))
                .is_ok()
        );
    }
}
