//! The scenarios of `herald check`: the staging validation plan for a live Herald, as code.
//!
//! Every scenario talks to the server only through the contract (docs/protocol.md): `/ws` with a JWT,
//! `POST /v1/events` with an API key, `GET /health/live`. So a check works against any engine and
//! any number of nodes behind the URL. Test users are random (`check-<random>`), so a check never
//! touches a real user's stream.
//!
//! Every event a check publishes carries an id that names its owner (`<user>:<tag>`), and every
//! socket verifies each frame it gets: owner, order, seq continuity, no duplicates, nothing extra.
//! An event seen by the wrong user is an *isolation failure*, whatever scenario sees it.
//!
//! Latency is measured per delivered event, from just before its `POST` to the moment its frame is
//! read from the socket.

use crate::{AuthMode, ClientError, Connection, Opened, Publisher, sign_token};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use herald_protocol::frame::EventFrame;
use herald_protocol::{Receipt, Recovery, ServerFrame};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to check and how hard.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// Base URL of the Herald to check, `http://host:port`.
    pub url: String,
    /// An API key the server accepts for `POST /v1/events`.
    pub api_key: String,
    /// The HS256 secret the server verifies client JWTs with.
    pub jwt_secret: String,
    /// Users in `golden_path` and `isolation`.
    pub users: usize,
    /// Runs (five events each) per user in `golden_path`, `isolation` and `multi_tab`.
    pub runs: usize,
    /// The longest wait for any one response, handshake or frame.
    pub timeout: Duration,
}

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

/// Why a check could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Nothing answered at the URL.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// Something answered, but not like a live Herald.
    #[error("{url}/health/live answered {status}, not 200: is this a Herald server?")]
    NotHerald {
        /// The URL tried.
        url: String,
        /// The HTTP status received.
        status: u16,
    },
}

/// Checks that a server answers `GET /health/live` with 200 within the configured timeout.
pub async fn preflight(config: &CheckConfig) -> Result<(), PreflightError> {
    let url = config.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| PreflightError::Unreachable { url: url.clone(), reason: error_chain(&e) })?;
    match http.get(format!("{url}/health/live")).send().await {
        Err(e) => Err(PreflightError::Unreachable { url, reason: error_chain(&e) }),
        Ok(r) if r.status().as_u16() != 200 => {
            Err(PreflightError::NotHerald { url, status: r.status().as_u16() })
        }
        Ok(_) => Ok(()),
    }
}

/// Runs every scenario in [`Scenario::ALL`] order, calling `on_done` after each.
pub async fn run_all(config: &CheckConfig, mut on_done: impl FnMut(&ScenarioResult)) -> Report {
    let mut results = Vec::with_capacity(Scenario::ALL.len());
    for scenario in Scenario::ALL {
        let result = run_scenario(config, scenario).await;
        on_done(&result);
        results.push(result);
    }
    Report::new(results)
}

/// Runs one scenario with fresh random users.
pub async fn run_scenario(config: &CheckConfig, scenario: Scenario) -> ScenarioResult {
    let ctx = Ctx::new(config);
    let mut lat = Latency::default();
    let outcome = match scenario {
        Scenario::GoldenPath => ctx.golden_path(&mut lat).await,
        Scenario::Isolation => ctx.isolation(&mut lat).await,
        Scenario::MultiTab => ctx.multi_tab(&mut lat).await,
        Scenario::Resume => ctx.resume(&mut lat).await,
        Scenario::Offline => ctx.offline().await,
        Scenario::AuthRejected => ctx.auth_rejected(&mut lat).await,
        Scenario::Idempotent => ctx.idempotent(&mut lat).await,
        Scenario::RunRules => ctx.run_rules(&mut lat).await,
        Scenario::Heartbeat => ctx.heartbeat().await,
    };
    let (p50_ms, p99_ms) = lat.percentiles();
    let (passed, detail, isolation_failure) = match outcome {
        Ok(detail) => (true, detail, false),
        Err(Failure::Isolation(d)) => (false, format!("ISOLATION FAILURE: {d}"), true),
        Err(Failure::Other(d)) => (false, d, false),
    };
    ScenarioResult { name: scenario.name().to_owned(), passed, detail, p50_ms, p99_ms, isolation_failure }
}

/// A fresh random test user id, `check-<16 hex digits>`.
pub fn random_user() -> String {
    format!("check-{:016x}", rand::random::<u64>())
}

/// The owner of an event id made by a check (`<user>:<tag>`), if it is one.
fn owner_of(id: &str) -> Option<&str> {
    id.starts_with("check-").then(|| id.split(':').next()).flatten()
}

/// The `:`-joined causes of an error, so "connection refused" is not hidden behind "error
/// sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Why a scenario failed.
#[derive(Debug)]
enum Failure {
    /// An event reached the wrong user.
    Isolation(String),
    /// Anything else.
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

type Outcome = Result<String, Failure>;

/// Send and receive instants, matched by event id.
#[derive(Default)]
struct Latency {
    sent: HashMap<String, Instant>,
    received: Vec<(String, Instant)>,
}

impl Latency {
    fn percentiles(&self) -> (Option<f64>, Option<f64>) {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        for (id, at) in &self.received {
            if let Some(sent) = self.sent.get(id) {
                let us = at.saturating_duration_since(*sent).as_micros().max(1);
                hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
            }
        }
        if hist.is_empty() {
            return (None, None);
        }
        let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
        (Some(ms(0.5)), Some(ms(0.99)))
    }
}

/// One event to publish: its id and body.
#[derive(Clone)]
struct Planned {
    id: String,
    body: Value,
}

/// The five events of a golden run of `user`, with ids naming the owner.
fn planned_run(user: &str, run: usize) -> Vec<Planned> {
    let run_id = format!("{user}:r{run}");
    crate::golden_run(user, &run_id)
        .into_iter()
        .enumerate()
        .map(|(i, mut body)| {
            let id = format!("{run_id}:{i}");
            body["id"] = json!(id);
            Planned { id, body }
        })
        .collect()
}

/// The last event a check publishes to a user: once it arrives, anything wrongly delivered
/// before it (to this socket) has been seen.
fn sentinel(user: &str) -> Planned {
    let id = format!("{user}:end");
    let body = json!({"user_id": user, "event": "custom", "id": id, "data": {"name": "herald_check_end"}});
    Planned { id, body }
}

fn event(user: &str, run_id: &str, id: &str, name: &str, data: Value) -> Planned {
    let body = json!({"user_id": user, "run_id": run_id, "event": name, "id": id, "data": data});
    Planned { id: id.to_owned(), body }
}

/// Verifies the events of one socket, one at a time: owner, seq continuity, expected order.
struct Stream<'a> {
    user: &'a str,
    expected: &'a [String],
    pos: usize,
    last_seq: u64,
}

impl<'a> Stream<'a> {
    fn new(user: &'a str, expected: &'a [String], last_seq: u64) -> Self {
        Stream { user, expected, pos: 0, last_seq }
    }

    fn done(&self) -> bool {
        self.pos == self.expected.len()
    }

    /// Checks one event; `Ok(true)` when it was the next expected one, `Ok(false)` for an event
    /// Herald itself adds (`run_stalled`).
    fn accept(&mut self, e: &EventFrame) -> Result<bool, Failure> {
        check_owner(self.user, e)?;
        if e.seq != self.last_seq + 1 {
            return Err(Failure::Other(if e.seq > self.last_seq {
                format!(
                    "{}: seq jumped from {} to {} at event {} ({}): {} event(s) never delivered",
                    self.user,
                    self.last_seq,
                    e.seq,
                    e.id,
                    e.event,
                    e.seq - self.last_seq - 1
                )
            } else {
                format!(
                    "{}: seq went back from {} to {} at event {} ({}): duplicate or out-of-order delivery",
                    self.user, self.last_seq, e.seq, e.id, e.event
                )
            }));
        }
        self.last_seq = e.seq;
        if e.event == "run_stalled" {
            return Ok(false);
        }
        match self.expected.get(self.pos) {
            None => Err(Failure::Other(format!(
                "{}: unexpected extra event {} ({}) after all {} expected events",
                self.user,
                e.id,
                e.event,
                self.expected.len()
            ))),
            Some(want) if *want != e.id => {
                let what = if self.expected[..self.pos].contains(&e.id) {
                    "a second delivery of"
                } else {
                    "unexpected event"
                };
                Err(Failure::Other(format!(
                    "{}: expected event {want} at position {}, got {what} {} ({})",
                    self.user, self.pos, e.id, e.event
                )))
            }
            Some(_) => {
                self.pos += 1;
                Ok(true)
            }
        }
    }
}

/// An event for another user is an isolation failure.
fn check_owner(user: &str, e: &EventFrame) -> Result<(), Failure> {
    if e.user_id != user {
        return Err(Failure::Isolation(format!(
            "{user} received event {} ({}) of user {}",
            e.id, e.event, e.user_id
        )));
    }
    if let Some(owner) = owner_of(&e.id).filter(|o| *o != user) {
        return Err(Failure::Isolation(format!(
            "{user} received event {} ({}) published for {owner}",
            e.id, e.event
        )));
    }
    Ok(())
}

/// What a receiving socket saw.
struct Received {
    conn: Connection,
    got: Vec<(String, Instant)>,
    result: Result<(), Failure>,
}

/// Waits for a receiving socket once the publishing side finished with `outcome` (aborting the
/// receiver if publishing failed), records what it received, and hands back its connection when
/// it saw exactly what it expected.
async fn collect<T>(
    receiver: tokio::task::JoinHandle<Received>,
    outcome: Result<T, Failure>,
    lat: &mut Latency,
) -> Result<(T, Connection), Failure> {
    let value = match outcome {
        Ok(value) => value,
        Err(e) => {
            receiver.abort();
            return Err(e);
        }
    };
    let received = receiver.await.map_err(|e| Failure::Other(format!("receiver: {e}")))?;
    lat.received.extend(received.got);
    received.result?;
    Ok((value, received.conn))
}

/// Reads `expected` (event ids, in order) live from `conn`, verifying each frame.
async fn receive(mut conn: Connection, user: String, expected: Vec<String>, timeout: Duration) -> Received {
    let mut stream = Stream::new(&user, &expected, conn.last_seq);
    let mut got = Vec::with_capacity(expected.len());
    let result = loop {
        if stream.done() {
            break Ok(());
        }
        match conn.next_frame(timeout).await {
            Ok(ServerFrame::Event(e)) => {
                let at = Instant::now();
                match stream.accept(&e) {
                    Ok(true) => got.push((e.id, at)),
                    Ok(false) => {}
                    Err(f) => break Err(f),
                }
            }
            Ok(ServerFrame::Pong | ServerFrame::Ack { .. }) => {}
            Ok(other) => break Err(Failure::Other(format!("{user}: unexpected frame {other:?}"))),
            Err(ClientError::Timeout) => {
                break Err(Failure::Other(format!(
                    "{user}: no event {} within {timeout:?} ({} of {} expected events received)",
                    expected[stream.pos],
                    stream.pos,
                    expected.len()
                )));
            }
            Err(e) => {
                break Err(Failure::Other(format!(
                    "{user}: {e} ({} of {} expected events received)",
                    stream.pos,
                    expected.len()
                )));
            }
        }
    };
    Received { conn, got, result }
}

/// Everything one scenario needs.
struct Ctx<'a> {
    cfg: &'a CheckConfig,
    publisher: Publisher,
}

impl<'a> Ctx<'a> {
    fn new(cfg: &'a CheckConfig) -> Self {
        Ctx { cfg, publisher: Publisher::new(&cfg.url, &cfg.api_key) }
    }

    fn token(&self, user: &str) -> String {
        sign_token(&self.cfg.jwt_secret, user, Duration::from_secs(3600))
    }

    /// Opens a socket for `user` and reads through `synced`, within the timeout.
    async fn open(&self, user: &str, cursor: Option<(u64, &str)>) -> Result<(Connection, Opened), Failure> {
        let token = self.token(user);
        let open = Connection::open(&self.cfg.url, &token, cursor, self.cfg.timeout);
        match tokio::time::timeout(self.cfg.timeout, open).await {
            Err(_) => {
                Err(Failure::Other(format!("{user}: socket did not open within {:?}", self.cfg.timeout)))
            }
            Ok(Err(e)) => Err(Failure::Other(format!("{user}: opening the socket: {e}"))),
            Ok(Ok((conn, opened))) => {
                for e in &opened.backlog {
                    check_owner(user, e)?;
                }
                Ok((conn, opened))
            }
        }
    }

    /// Opens a socket for a user that has never had an event: nothing may come before `synced`.
    async fn open_fresh(&self, user: &str) -> Result<(Connection, Opened), Failure> {
        let (conn, opened) = self.open(user, None).await?;
        if let Some(e) = opened.backlog.first() {
            return Err(Failure::Other(format!(
                "{user} is a new user, yet its socket opened with event {} ({})",
                e.id, e.event
            )));
        }
        Ok((conn, opened))
    }

    /// POSTs a body within the timeout; returns status and JSON body.
    async fn post(&self, body: &Value) -> Result<(u16, Value), Failure> {
        match tokio::time::timeout(self.cfg.timeout, self.publisher.post(body)).await {
            Err(_) => {
                Err(Failure::Other(format!("POST /v1/events got no answer within {:?}", self.cfg.timeout)))
            }
            Ok(Err(e)) => Err(Failure::Other(format!("POST /v1/events: {}", error_chain(&e)))),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Publishes one event that must be accepted; notes when it was sent.
    async fn publish(&self, p: &Planned, lat: &mut Latency) -> Result<Receipt, Failure> {
        lat.sent.insert(p.id.clone(), Instant::now());
        let (status, body) = self.post(&p.body).await?;
        if status != 200 {
            return Err(Failure::Other(format!(
                "publishing {} ({}) answered {status}: {body}",
                p.id,
                p.body["event"].as_str().unwrap_or("?")
            )));
        }
        serde_json::from_value(body.clone()).map_err(|e| {
            Failure::Other(format!("publishing {} answered 200 with a bad receipt ({e}): {body}", p.id))
        })
    }

    /// Publishes events one after the other.
    async fn publish_all(&self, plan: &[Planned]) -> (Latency, Result<Vec<Receipt>, Failure>) {
        let mut lat = Latency::default();
        let mut receipts = Vec::with_capacity(plan.len());
        for p in plan {
            match self.publish(p, &mut lat).await {
                Ok(r) => receipts.push(r),
                Err(e) => return (lat, Err(e)),
            }
        }
        (lat, Ok(receipts))
    }

    /// Publishes an event that must be refused with `status` (and error `code`, when given).
    async fn refused(&self, what: &str, p: &Planned, status: u16, code: Option<&str>) -> Result<(), Failure> {
        let (got, body) = self.post(&p.body).await?;
        let got_code = body["error"]["code"].as_str();
        if got != status || code.is_some_and(|c| got_code != Some(c)) {
            let want = code.map(|c| format!("{status} {c}")).unwrap_or_else(|| status.to_string());
            return Err(Failure::Other(format!("{what} answered {got} {body}; expected {want}")));
        }
        Ok(())
    }

    /// Connects `users` (each with `tabs` sockets), publishes `runs` runs per user (users in
    /// parallel), then a sentinel per user, and verifies every socket got exactly its user's
    /// events in order. Returns the number of run events received (end markers not counted).
    async fn deliver(&self, users: &[String], tabs: usize, lat: &mut Latency) -> Result<usize, Failure> {
        let opens = users
            .iter()
            .flat_map(|u| (0..tabs).map(move |_| u))
            .map(|u| async move { self.open_fresh(u).await.map(|(conn, _)| (u.clone(), conn)) });
        let mut conns = Vec::new();
        for opened in futures_util::future::join_all(opens).await {
            conns.push(opened?);
        }
        let plans: HashMap<&String, Vec<Planned>> =
            users.iter().map(|u| (u, (0..self.cfg.runs).flat_map(|r| planned_run(u, r)).collect())).collect();
        let receivers: Vec<_> = conns
            .into_iter()
            .map(|(user, conn)| {
                let mut expected: Vec<String> = plans[&user].iter().map(|p| p.id.clone()).collect();
                expected.push(sentinel(&user).id);
                tokio::spawn(receive(conn, user, expected, self.cfg.timeout))
            })
            .collect();
        let published =
            futures_util::future::join_all(users.iter().map(|u| self.publish_all(&plans[u]))).await;
        let mut publish_error = None;
        for (sent, result) in published {
            lat.sent.extend(sent.sent);
            if let Err(e) = result {
                publish_error.get_or_insert(e);
            }
        }
        if publish_error.is_none() {
            let sentinels: Vec<Planned> = users.iter().map(|u| sentinel(u)).collect();
            let published = futures_util::future::join_all(sentinels.iter().map(|p| async move {
                let mut one = Latency::default();
                let r = self.publish(p, &mut one).await;
                (one, r)
            }))
            .await;
            for (sent, result) in published {
                lat.sent.extend(sent.sent);
                if let Err(e) = result {
                    publish_error.get_or_insert(e);
                }
            }
        }
        let aborts: Vec<_> = receivers.iter().map(|r| r.abort_handle()).collect();
        if publish_error.is_some() {
            aborts.iter().for_each(|a| a.abort());
        }
        let mut pending: FuturesUnordered<_> = receivers.into_iter().collect();
        let mut first_error = None;
        let mut delivered = 0;
        while let Some(joined) = pending.next().await {
            let Ok(received) = joined else { continue };
            delivered += received.got.len();
            lat.received.extend(received.got);
            match received.result {
                Err(f @ Failure::Isolation(_)) => {
                    aborts.iter().for_each(|a| a.abort());
                    return Err(f);
                }
                Err(f) => {
                    first_error.get_or_insert(f);
                }
                Ok(()) => received.conn.close().await,
            }
        }
        match publish_error.or(first_error) {
            Some(f) => Err(f),
            // Every socket also got its user's end marker; count the run events only.
            None => Ok(delivered - aborts.len()),
        }
    }

    async fn golden_path(&self, lat: &mut Latency) -> Outcome {
        let mut delivered = 0;
        for _ in 0..self.cfg.users {
            delivered += self.deliver(&[random_user()], 1, lat).await?;
        }
        Ok(format!(
            "{} users one by one, {} runs each: {delivered} events received in order by their own user",
            self.cfg.users, self.cfg.runs
        ))
    }

    async fn isolation(&self, lat: &mut Latency) -> Outcome {
        let users: Vec<String> = (0..self.cfg.users).map(|_| random_user()).collect();
        let delivered = self.deliver(&users, 1, lat).await?;
        Ok(format!(
            "{} users at once, {} runs each: {delivered} events, each seen only by its user",
            self.cfg.users, self.cfg.runs
        ))
    }

    async fn multi_tab(&self, lat: &mut Latency) -> Outcome {
        let delivered = self.deliver(&[random_user()], 2, lat).await?;
        Ok(format!("2 sockets of one user each received the same {} events in order", delivered / 2))
    }

    async fn resume(&self, lat: &mut Latency) -> Outcome {
        let user = random_user();
        let run = planned_run(&user, 0);
        let (before, after) = run.split_at(2);
        let (conn, opened) = self.open_fresh(&user).await?;
        let ids = before.iter().map(|p| p.id.clone()).collect();
        let receiver = tokio::spawn(receive(conn, user.clone(), ids, self.cfg.timeout));
        let (sent, published) = self.publish_all(before).await;
        lat.sent.extend(sent.sent);
        let (_, conn) = collect(receiver, published, lat).await?;
        let cursor = conn.last_seq;
        conn.abort();
        let (sent, published) = self.publish_all(after).await;
        lat.sent.extend(sent.sent);
        published?;
        let (conn, reopened) = self.open(&user, Some((cursor, &opened.epoch))).await?;
        if reopened.recovery != Recovery::Replayed {
            return Err(Failure::Other(format!(
                "resume after seq {cursor} in epoch {} answered recovery {:?}, expected replayed",
                opened.epoch, reopened.recovery
            )));
        }
        let missing: Vec<String> = after.iter().map(|p| p.id.clone()).collect();
        let mut stream = Stream::new(&user, &missing, cursor);
        for e in &reopened.backlog {
            stream.accept(e)?;
        }
        if !stream.done() {
            return Err(Failure::Other(format!(
                "resume replayed {} of the {} events published while disconnected",
                stream.pos,
                missing.len()
            )));
        }
        let last = sentinel(&user);
        let receiver = tokio::spawn(receive(conn, user.clone(), vec![last.id.clone()], self.cfg.timeout));
        let published = self.publish(&last, lat).await;
        let (_, conn) = collect(receiver, published, lat).await?;
        conn.close().await;
        Ok(format!(
            "dropped the socket after seq {cursor}; resume replayed exactly the {} missing events, then live",
            missing.len()
        ))
    }

    async fn offline(&self) -> Outcome {
        let user = random_user();
        let run = planned_run(&user, 0);
        let (_, published) = self.publish_all(&run).await;
        let receipts = published?;
        let epoch = receipts[0].epoch.clone();
        let (conn, opened) = self.open(&user, Some((0, &epoch))).await?;
        if opened.recovery != Recovery::Replayed {
            return Err(Failure::Other(format!(
                "resume from 0 in epoch {epoch} answered recovery {:?}, expected replayed",
                opened.recovery
            )));
        }
        let ids: Vec<String> = run.iter().map(|p| p.id.clone()).collect();
        let mut stream = Stream::new(&user, &ids, 0);
        for e in &opened.backlog {
            stream.accept(e)?;
        }
        if !stream.done() {
            return Err(Failure::Other(format!(
                "{} events were published before connecting; resume from 0 delivered {}",
                ids.len(),
                stream.pos
            )));
        }
        conn.close().await;
        Ok(format!(
            "{} events published before connecting, all replayed in order on resume from 0",
            ids.len()
        ))
    }

    /// Connecting with `token` must be refused with 401 before the upgrade.
    async fn socket_refused(&self, what: &str, token: &str) -> Result<(), Failure> {
        let connect = Connection::connect(&self.cfg.url, token, None, AuthMode::Header);
        match tokio::time::timeout(self.cfg.timeout, connect).await {
            Err(_) => Err(Failure::Other(format!("{what}: no answer within {:?}", self.cfg.timeout))),
            Ok(Ok(conn)) => {
                conn.abort();
                Err(Failure::Other(format!("{what} was accepted (the socket opened); expected 401")))
            }
            Ok(Err(ClientError::Refused { status: 401, .. })) => Ok(()),
            Ok(Err(ClientError::Refused { status, body })) => {
                Err(Failure::Other(format!("{what} was refused with {status} {body}; expected 401")))
            }
            Ok(Err(e)) => Err(Failure::Other(format!("{what}: {e}; expected a 401 refusal"))),
        }
    }

    async fn auth_rejected(&self, lat: &mut Latency) -> Outcome {
        let user = random_user();
        let wrong = sign_token("herald-check-not-the-secret", &user, Duration::from_secs(3600));
        self.socket_refused("a token signed with another secret", &wrong).await?;
        self.socket_refused("a malformed token", "not-a-jwt").await?;
        self.socket_refused("an expired token", &expired_token(&self.cfg.jwt_secret, &user)).await?;
        let (conn, _) = self.open_fresh(&user).await?;
        let last = sentinel(&user);
        let receiver = tokio::spawn(receive(conn, user.clone(), vec![last.id.clone()], self.cfg.timeout));
        let unkeyed =
            event(&user, &format!("{user}:r0"), &format!("{user}:nokey"), "agent_started", json!({}));
        let outcome = async {
            let http = reqwest::Client::builder()
                .timeout(self.cfg.timeout)
                .build()
                .map_err(|e| Failure::Other(e.to_string()))?;
            let url = format!("{}/v1/events", self.cfg.url.trim_end_matches('/'));
            let response = http.post(&url).json(&unkeyed.body).send().await.map_err(|e| {
                Failure::Other(format!("POST /v1/events without API key: {}", error_chain(&e)))
            })?;
            let status = response.status().as_u16();
            if status != 401 {
                let body = response.text().await.unwrap_or_default();
                return Err(Failure::Other(format!(
                    "POST /v1/events without an API key answered {status} {body}; expected 401"
                )));
            }
            let wrong_key =
                Ctx { cfg: self.cfg, publisher: Publisher::new(&self.cfg.url, "herald-check-wrong-key") };
            let bad =
                event(&user, &format!("{user}:r1"), &format!("{user}:badkey"), "agent_started", json!({}));
            wrong_key.refused("POST /v1/events with a wrong API key", &bad, 401, None).await?;
            self.publish(&last, lat).await.map(drop)
        }
        .await;
        let ((), conn) = collect(receiver, outcome, lat).await?;
        conn.close().await;
        Ok("wrong-secret, malformed and expired tokens got 401; publishing without or with a wrong \
            API key got 401 and delivered nothing"
            .to_owned())
    }

    async fn idempotent(&self, lat: &mut Latency) -> Outcome {
        let user = random_user();
        let run_id = format!("{user}:r0");
        let start = event(&user, &run_id, &format!("{run_id}:0"), "agent_started", json!({}));
        let thinking =
            event(&user, &run_id, &format!("{run_id}:1"), "agent_thinking", json!({"text": "once"}));
        let last = sentinel(&user);
        let (conn, _) = self.open_fresh(&user).await?;
        let expected = vec![start.id.clone(), thinking.id.clone(), last.id.clone()];
        let receiver = tokio::spawn(receive(conn, user.clone(), expected, self.cfg.timeout));
        let outcome = async {
            self.publish(&start, lat).await?;
            let first = self.publish(&thinking, lat).await?;
            let mut ignore = Latency::default();
            let second = self.publish(&thinking, &mut ignore).await?;
            if first.duplicate || !second.duplicate || second.seq != first.seq {
                return Err(Failure::Other(format!(
                    "publishing id {} twice answered {first:?} then {second:?}; expected the first \
                     receipt again with duplicate=true",
                    thinking.id
                )));
            }
            self.publish(&last, lat).await.map(|_| first.seq)
        }
        .await;
        let (seq, conn) = collect(receiver, outcome, lat).await?;
        conn.close().await;
        Ok(format!(
            "id {} published twice: one seq ({seq}), duplicate=true the second time, delivered once",
            thinking.id
        ))
    }

    async fn run_rules(&self, lat: &mut Latency) -> Outcome {
        let user = random_user();
        let run_id = format!("{user}:r0");
        let start = event(&user, &run_id, &format!("{run_id}:0"), "agent_started", json!({}));
        let done = event(&user, &run_id, &format!("{run_id}:1"), "agent_completed", json!({}));
        let last = sentinel(&user);
        let (conn, _) = self.open_fresh(&user).await?;
        let expected = vec![start.id.clone(), done.id.clone(), last.id.clone()];
        let receiver = tokio::spawn(receive(conn, user.clone(), expected, self.cfg.timeout));
        let outcome = async {
            let never = format!("{user}:never");
            let early = event(&user, &never, &format!("{never}:0"), "agent_thinking", json!({}));
            self.refused("agent_thinking for a run that never started", &early, 409, Some("run_state"))
                .await?;
            self.publish(&start, lat).await?;
            self.publish(&done, lat).await?;
            let late = event(&user, &run_id, &format!("{run_id}:late"), "agent_thinking", json!({}));
            self.refused("agent_thinking after agent_completed", &late, 409, Some("run_state")).await?;
            let again = event(&user, &run_id, &format!("{run_id}:again"), "agent_started", json!({}));
            self.refused("a second agent_started for a run", &again, 409, Some("run_state")).await?;
            self.publish(&last, lat).await.map(drop)
        }
        .await;
        let ((), conn) = collect(receiver, outcome, lat).await?;
        conn.close().await;
        Ok("event before agent_started, event after the terminal event and a second agent_started \
            got 409 run_state and were not delivered"
            .to_owned())
    }

    async fn heartbeat(&self) -> Outcome {
        let user = random_user();
        let (mut conn, _) = self.open_fresh(&user).await?;
        let mut rtts = Vec::new();
        for _ in 0..3 {
            let sent = Instant::now();
            conn.send_text(r#"{"type":"ping"}"#)
                .await
                .map_err(|e| Failure::Other(format!("sending ping: {e}")))?;
            match conn.next_frame(self.cfg.timeout).await {
                Ok(ServerFrame::Pong) => rtts.push(sent.elapsed()),
                Ok(other) => {
                    return Err(Failure::Other(format!("ping was answered with {other:?}, expected pong")));
                }
                Err(ClientError::Timeout) => {
                    return Err(Failure::Other(format!("no pong within {:?}", self.cfg.timeout)));
                }
                Err(e) => return Err(Failure::Other(format!("waiting for pong: {e}"))),
            }
        }
        conn.close().await;
        let max = rtts.iter().max().copied().unwrap_or_default();
        Ok(format!("{} pings answered with pong (slowest {:.1} ms)", rtts.len(), max.as_secs_f64() * 1000.0))
    }
}

/// An HS256 token for `sub` that expired an hour ago.
fn expired_token(secret: &str, sub: &str) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = json!({ "sub": sub, "exp": now.saturating_sub(3600) });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(user: &str, seq: u64, id: &str) -> EventFrame {
        EventFrame {
            seq,
            id: id.into(),
            user_id: user.into(),
            thread_id: None,
            run_id: None,
            event: "agent_thinking".into(),
            data: json!({}),
            ts: String::new(),
        }
    }

    #[test]
    fn stream_flags_gaps_leaks_duplicates_and_extras() {
        let u = "check-a";
        let expected = vec!["check-a:1".to_owned(), "check-a:2".to_owned()];
        let mut s = Stream::new(u, &expected, 0);
        assert!(s.accept(&frame(u, 1, "check-a:1")).unwrap());
        assert!(
            matches!(s.accept(&frame(u, 3, "check-a:2")), Err(Failure::Other(m)) if m.contains("jumped"))
        );
        let mut s = Stream::new(u, &expected, 0);
        assert!(matches!(s.accept(&frame("check-b", 1, "check-b:1")), Err(Failure::Isolation(_))));
        assert!(matches!(s.accept(&frame(u, 1, "check-b:1")), Err(Failure::Isolation(_))));
        assert!(s.accept(&frame(u, 1, "check-a:1")).unwrap());
        let mut dup = Stream { last_seq: 1, pos: 1, ..Stream::new(u, &expected, 0) };
        assert!(
            matches!(dup.accept(&frame(u, 2, "check-a:1")), Err(Failure::Other(m)) if m.contains("second delivery"))
        );
        assert!(s.accept(&frame(u, 2, "check-a:2")).unwrap());
        assert!(s.done());
        assert!(matches!(s.accept(&frame(u, 3, "check-a:9")), Err(Failure::Other(m)) if m.contains("extra")));
    }

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

    #[test]
    fn latency_is_matched_by_id() {
        let mut lat = Latency::default();
        assert_eq!(lat.percentiles(), (None, None));
        let t = Instant::now();
        lat.sent.insert("x".into(), t);
        lat.received.push(("x".into(), t + Duration::from_millis(3)));
        let (p50, p99) = lat.percentiles();
        assert!((p50.unwrap() - 3.0).abs() < 0.01 && (p99.unwrap() - 3.0).abs() < 0.01, "{p50:?} {p99:?}");
    }
}
