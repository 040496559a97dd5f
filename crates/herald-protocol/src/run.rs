//! The run state machine (docs/protocol.md, "Agent events and run rules"): which event may follow which within one `run_id`.
//!
//! Pure: `(state, event) -> Result<state, RunRuleError>`. Engines call [`RunState::apply`] inside
//! their atomic append, so two publishers racing on one run cannot both win.

use crate::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What Herald remembers about one run of one user. Serializable so that engines which keep it
/// outside the process (Redis) store exactly this state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    #[serde(default, rename = "t", skip_serializing_if = "Vec::is_empty")]
    open_tools: Vec<OpenTool>,
    #[serde(default, rename = "e", skip_serializing_if = "Option::is_none", with = "kind_name")]
    ended: Option<EventKind>,
    #[serde(default, rename = "s", skip_serializing_if = "std::ops::Not::not")]
    stalled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct OpenTool {
    #[serde(rename = "n")]
    name: String,
    #[serde(default, rename = "c", skip_serializing_if = "Option::is_none")]
    call_id: Option<String>,
}

/// Serializes an optional [`EventKind`] by its wire name.
mod kind_name {
    use crate::EventKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &Option<EventKind>, s: S) -> Result<S::Ok, S::Error> {
        match kind {
            Some(k) => s.serialize_some(k.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EventKind>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        name.map(|n| {
            EventKind::from_name(&n).ok_or_else(|| serde::de::Error::custom(format!("unknown event {n}")))
        })
        .transpose()
    }
}

/// An event that breaks a run rule. Each variant is one rule; [`RunRuleError::rule`] names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunRuleError {
    /// An event arrived for a run that never started.
    #[error("run {run_id} has not started: agent_started must be the run's first event (got {event})")]
    NotStarted {
        /// The run.
        run_id: String,
        /// The offending event.
        event: EventKind,
    },
    /// `agent_started` arrived for a run Herald already knows.
    #[error("run {run_id} already started: a second agent_started is not allowed")]
    AlreadyStarted {
        /// The run.
        run_id: String,
    },
    /// Something arrived after the run's terminal event.
    #[error("run {run_id} already ended with {terminal}: nothing may follow a terminal event (got {event})")]
    AfterTerminal {
        /// The run.
        run_id: String,
        /// The terminal event the run ended with.
        terminal: EventKind,
        /// The offending event.
        event: EventKind,
    },
    /// `tool_completed` without a matching open `tool_executing`.
    #[error(
        "run {run_id} has no open tool_executing for {what}: tool_completed must match an open tool call"
    )]
    NoOpenTool {
        /// The run.
        run_id: String,
        /// `tool_call_id "x"` or `tool_name "y"`.
        what: String,
    },
    /// `agent_completed` while tool calls are still open.
    #[error("run {run_id} still has open tool calls ({open}): complete them before agent_completed")]
    ToolsOpen {
        /// The run.
        run_id: String,
        /// Names of the open tools.
        open: String,
    },
}

impl RunRuleError {
    /// A stable, machine-readable name for the broken rule (used in metrics labels).
    pub fn rule(&self) -> &'static str {
        match self {
            RunRuleError::NotStarted { .. } => "not_started",
            RunRuleError::AlreadyStarted { .. } => "already_started",
            RunRuleError::AfterTerminal { .. } => "after_terminal",
            RunRuleError::NoOpenTool { .. } => "no_open_tool",
            RunRuleError::ToolsOpen { .. } => "tools_open",
        }
    }
}

impl RunState {
    /// True once a terminal event was accepted.
    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// True after a `run_stalled` and before the next event of the run.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Applies one event to the run `run_id`, whose current state is `state` (`None`: unknown run).
    ///
    /// On success `state` holds the new state; on error it is unchanged. A `custom` event for an
    /// unknown run is allowed and creates no state: custom events may stand outside runs.
    pub fn apply(
        state: &mut Option<RunState>,
        run_id: &str,
        kind: EventKind,
        data: &Map<String, Value>,
    ) -> Result<(), RunRuleError> {
        let Some(run) = state else {
            return match kind {
                EventKind::AgentStarted => {
                    *state = Some(RunState::default());
                    Ok(())
                }
                EventKind::Custom => Ok(()),
                event => Err(RunRuleError::NotStarted { run_id: run_id.to_owned(), event }),
            };
        };
        if let Some(terminal) = run.ended {
            return Err(if kind == EventKind::AgentStarted {
                RunRuleError::AlreadyStarted { run_id: run_id.to_owned() }
            } else {
                RunRuleError::AfterTerminal { run_id: run_id.to_owned(), terminal, event: kind }
            });
        }
        match kind {
            EventKind::AgentStarted => {
                return Err(RunRuleError::AlreadyStarted { run_id: run_id.to_owned() });
            }
            EventKind::ToolExecuting => run.open_tools.push(OpenTool {
                name: str_field(data, "tool_name").unwrap_or_default().to_owned(),
                call_id: str_field(data, "tool_call_id").map(str::to_owned),
            }),
            EventKind::ToolCompleted => {
                let index = match str_field(data, "tool_call_id") {
                    Some(id) => run.open_tools.iter().position(|t| t.call_id.as_deref() == Some(id)),
                    None => {
                        let name = str_field(data, "tool_name").unwrap_or_default();
                        run.open_tools.iter().position(|t| t.name == name)
                    }
                };
                let Some(index) = index else {
                    let what = match str_field(data, "tool_call_id") {
                        Some(id) => format!("tool_call_id {id:?}"),
                        None => format!("tool_name {:?}", str_field(data, "tool_name").unwrap_or_default()),
                    };
                    return Err(RunRuleError::NoOpenTool { run_id: run_id.to_owned(), what });
                };
                run.open_tools.remove(index);
            }
            EventKind::AgentCompleted if !run.open_tools.is_empty() => {
                let open = run.open_tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(RunRuleError::ToolsOpen { run_id: run_id.to_owned(), open });
            }
            EventKind::AgentCompleted | EventKind::AgentError | EventKind::AgentCancelled => {
                run.open_tools.clear();
            }
            _ => {}
        }
        if kind.is_terminal() {
            run.ended = Some(kind);
        }
        run.stalled = kind == EventKind::RunStalled;
        Ok(())
    }
}

fn str_field<'a>(data: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(state: &mut Option<RunState>, kind: EventKind, data: Value) -> Result<(), RunRuleError> {
        RunState::apply(state, "r1", kind, data.as_object().unwrap())
    }

    #[test]
    fn golden_path_is_accepted() {
        let mut s = None;
        step(&mut s, EventKind::AgentStarted, json!({})).unwrap();
        step(&mut s, EventKind::AgentThinking, json!({"text": "hm"})).unwrap();
        step(&mut s, EventKind::ToolExecuting, json!({"tool_name": "search"})).unwrap();
        step(&mut s, EventKind::ToolCompleted, json!({"tool_name": "search"})).unwrap();
        step(&mut s, EventKind::AgentCompleted, json!({})).unwrap();
        assert!(s.unwrap().is_ended());
    }

    #[test]
    fn each_rule_is_named() {
        let mut s = None;
        let e = step(&mut s, EventKind::AgentThinking, json!({})).unwrap_err();
        assert_eq!(e.rule(), "not_started");
        assert!(e.to_string().contains("agent_started must be the run's first event"));

        step(&mut s, EventKind::AgentStarted, json!({})).unwrap();
        assert_eq!(step(&mut s, EventKind::AgentStarted, json!({})).unwrap_err().rule(), "already_started");
        let e = step(&mut s, EventKind::ToolCompleted, json!({"tool_name": "x"})).unwrap_err();
        assert_eq!(e.rule(), "no_open_tool");

        step(&mut s, EventKind::ToolExecuting, json!({"tool_name": "x", "tool_call_id": "c1"})).unwrap();
        let e = step(&mut s, EventKind::ToolCompleted, json!({"tool_name": "x", "tool_call_id": "c2"}))
            .unwrap_err();
        assert!(e.to_string().contains("tool_call_id \"c2\""), "{e}");
        assert_eq!(step(&mut s, EventKind::AgentCompleted, json!({})).unwrap_err().rule(), "tools_open");

        step(&mut s, EventKind::AgentError, json!({"message": "boom"})).unwrap();
        let e = step(&mut s, EventKind::AgentThinking, json!({})).unwrap_err();
        assert_eq!(e.rule(), "after_terminal");
        assert!(e.to_string().contains("already ended with agent_error"), "{e}");
        assert_eq!(step(&mut s, EventKind::AgentStarted, json!({})).unwrap_err().rule(), "already_started");
    }

    #[test]
    fn errors_leave_state_unchanged_and_stall_clears() {
        let mut s = None;
        step(&mut s, EventKind::AgentStarted, json!({})).unwrap();
        step(&mut s, EventKind::RunStalled, json!({})).unwrap();
        assert!(s.as_ref().unwrap().is_stalled());
        let before = s.clone();
        assert!(step(&mut s, EventKind::ToolCompleted, json!({"tool_name": "x"})).is_err());
        assert_eq!(s, before);
        step(&mut s, EventKind::Progress, json!({})).unwrap();
        assert!(!s.unwrap().is_stalled());
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = None;
        step(&mut s, EventKind::AgentStarted, json!({})).unwrap();
        step(&mut s, EventKind::ToolExecuting, json!({"tool_name": "x", "tool_call_id": "c"})).unwrap();
        let text = serde_json::to_string(s.as_ref().unwrap()).unwrap();
        let back: RunState = serde_json::from_str(&text).unwrap();
        assert_eq!(Some(back), s);
        step(&mut s, EventKind::AgentCancelled, json!({})).unwrap();
        let text = serde_json::to_string(s.as_ref().unwrap()).unwrap();
        assert_eq!(text, r#"{"e":"agent_cancelled"}"#);
    }

    #[test]
    fn custom_events_may_stand_outside_runs() {
        let mut s = None;
        step(&mut s, EventKind::Custom, json!({"name": "x"})).unwrap();
        assert!(s.is_none());
    }
}
