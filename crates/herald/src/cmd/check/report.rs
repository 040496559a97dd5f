//! The scenarios a check runs, by name, and the report it prints or serializes (`--json`).

use serde::Serialize;

/// One named scenario of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Each user connects, its runs are published, it receives exactly its runs in order.
    GoldenPath,
    /// All users at once; any event seen by the wrong user is an isolation failure.
    Isolation,
    /// Two connections of one user see the same sequence.
    MultiTab,
    /// Disconnect mid-run, publish the rest, resume: exactly the missing events are replayed.
    Resume,
    /// Publish before connecting, then resume from 0: everything is delivered.
    Offline,
    /// A bad token, an expired token and a missing or wrong API key are refused.
    AuthRejected,
    /// A duplicate `id` is acknowledged as a duplicate and delivered once.
    Idempotent,
    /// Out-of-order run events are refused with 409 `run_state` and not delivered.
    RunRules,
    /// `{"type":"ping"}` is answered with `{"type":"pong"}`.
    Heartbeat,
    /// With several `--url`s: for each node, events published there reach a socket on the next
    /// node, in order (the nodes share one log per user).
    CrossNodeDelivery,
    /// With several `--url`s: for each node, a socket dropped there resumes on the next node with
    /// exactly the missing events (one epoch and cursor across nodes).
    CrossNodeResume,
}

impl Scenario {
    /// Every scenario, in the order a check runs and reports them.
    pub const ALL: [Scenario; 9] = [
        Scenario::GoldenPath,
        Scenario::Isolation,
        Scenario::MultiTab,
        Scenario::Resume,
        Scenario::Offline,
        Scenario::AuthRejected,
        Scenario::Idempotent,
        Scenario::RunRules,
        Scenario::Heartbeat,
    ];

    /// The scenarios that need more than one node, run after [`Scenario::ALL`].
    pub const MULTI_NODE: [Scenario; 2] = [Scenario::CrossNodeDelivery, Scenario::CrossNodeResume];

    /// The scenarios a check of `nodes` nodes runs, in order.
    pub fn for_nodes(nodes: usize) -> Vec<Scenario> {
        let multi: &[Scenario] = if nodes > 1 { &Self::MULTI_NODE } else { &[] };
        Self::ALL.iter().chain(multi).copied().collect()
    }

    /// The scenario's name as printed and in `--json` (`golden_path`, …).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::GoldenPath => "golden_path",
            Scenario::Isolation => "isolation",
            Scenario::MultiTab => "multi_tab",
            Scenario::Resume => "resume",
            Scenario::Offline => "offline",
            Scenario::AuthRejected => "auth_rejected",
            Scenario::Idempotent => "idempotent",
            Scenario::RunRules => "run_rules",
            Scenario::Heartbeat => "heartbeat",
            Scenario::CrossNodeDelivery => "cross_node_delivery",
            Scenario::CrossNodeResume => "cross_node_resume",
        }
    }
}

/// The outcome of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was verified, or what went wrong first.
    pub detail: String,
    /// Median publish→receive latency in ms (`None` when the scenario delivers nothing live).
    pub p50_ms: Option<f64>,
    /// 99th percentile publish→receive latency in ms.
    pub p99_ms: Option<f64>,
    /// An event was seen by the wrong user during this scenario.
    #[serde(skip)]
    pub isolation_failure: bool,
}

/// The outcome of a whole check, serialized as the `--json` document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `passed / total`, from 0.0 to 1.0.
    pub pass_rate: f64,
    /// Scenarios that passed.
    pub passed: usize,
    /// Scenarios run.
    pub total: usize,
    /// Some event was seen by the wrong user; the check fails whatever the pass rate.
    pub isolation_failure: bool,
    /// Each scenario's outcome, in run order.
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    /// Sums up scenario results.
    pub fn new(scenarios: Vec<ScenarioResult>) -> Self {
        let total = scenarios.len();
        let passed = scenarios.iter().filter(|s| s.passed).count();
        let pass_rate = if total == 0 { 0.0 } else { passed as f64 / total as f64 };
        let isolation_failure = scenarios.iter().any(|s| s.isolation_failure);
        Report { pass_rate, passed, total, isolation_failure, scenarios }
    }

    /// True when the pass rate reaches `min_pass_rate` and no isolation failure occurred.
    pub fn succeeded(&self, min_pass_rate: f64) -> bool {
        !self.isolation_failure && self.pass_rate >= min_pass_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fails_on_isolation_whatever_the_rate() {
        let ok = |name: &str| ScenarioResult {
            name: name.into(),
            passed: true,
            detail: String::new(),
            p50_ms: None,
            p99_ms: None,
            isolation_failure: false,
        };
        let mut leak = ok("isolation");
        leak.passed = false;
        leak.isolation_failure = true;
        let report = Report::new(vec![ok("a"), ok("b"), leak]);
        assert_eq!((report.passed, report.total), (2, 3));
        assert!(!report.succeeded(0.0));
        let report = Report::new(vec![ok("a"), ok("b")]);
        assert!(report.succeeded(1.0));
    }
}
