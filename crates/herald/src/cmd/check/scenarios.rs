//! The scenarios of `herald check`: the staging validation plan for a live Herald, as code.
//!
//! Every scenario talks to the server only through the contract (`/ws` with a JWT,
//! `POST /v1/events` with an API key, `GET /health/live`), so a check works against any engine and
//! any number of nodes behind the URL. Test users are random (`check-<random>`), so a check never
//! touches a real user's stream.
//!
//! Latency is measured per delivered event, from just before its `POST` to the moment its frame is
//! read from the socket.

use super::ctx::Ctx;
use super::report::{Scenario, ScenarioResult};
use super::verify::{
    Failure, Latency, Outcome, Stream, collect, event, planned_run, random_user, receive, sentinel,
};
use herald_client::{ClientError, Publisher, sign_token};
use herald_protocol::{Recovery, ServerFrame};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to check and how hard.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// Base URLs of the Herald nodes to check, `http://host:port`: the single-node scenarios run
    /// against the first; with more than one, the cross-node scenarios use them all.
    pub urls: Vec<String>,
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

/// Checks that every node answers `GET /health/live` with 200 within the configured timeout.
pub async fn preflight(config: &CheckConfig) -> Result<(), PreflightError> {
    for url in &config.urls {
        preflight_one(url, config.timeout).await?;
    }
    Ok(())
}

async fn preflight_one(url: &str, timeout: Duration) -> Result<(), PreflightError> {
    let url = url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .timeout(timeout)
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
        Scenario::CrossNodeDelivery => cross_node_delivery(config, &mut lat).await,
        Scenario::CrossNodeResume => cross_node_resume(config, &mut lat).await,
    };
    let (p50_ms, p99_ms) = lat.percentiles();
    let (passed, detail, isolation_failure) = match outcome {
        Ok(detail) => (true, detail, false),
        Err(Failure::Isolation(d)) => (false, format!("ISOLATION FAILURE: {d}"), true),
        Err(Failure::Other(d)) => (false, d, false),
    };
    ScenarioResult { name: scenario.name().to_owned(), passed, detail, p50_ms, p99_ms, isolation_failure }
}

/// For each node, a user on the next node receives the runs published on this one.
async fn cross_node_delivery(config: &CheckConfig, lat: &mut Latency) -> Outcome {
    let mut delivered = 0;
    for (from, to) in node_pairs(config) {
        let user = random_user();
        delivered +=
            to.deliver_via(&from, &[user], 1, lat).await.map_err(|f| f.on_nodes(from.url, to.url))?;
    }
    Ok(format!(
        "{} nodes ({}), each publishing {} runs to a user connected to the next: {delivered} events \
         received in order across nodes",
        config.urls.len(),
        config.urls.join(", "),
        config.runs
    ))
}

/// For each node, a socket dropped there resumes on the next node.
async fn cross_node_resume(config: &CheckConfig, lat: &mut Latency) -> Outcome {
    let mut replayed = 0;
    for (from, to) in node_pairs(config) {
        let (_, missing) = from.resume_on(&to, lat).await.map_err(|f| f.on_nodes(from.url, to.url))?;
        replayed += missing;
    }
    Ok(format!(
        "{} nodes ({}), each dropping a socket mid-run and resuming on the next: {replayed} missing \
         events replayed exactly, then live",
        config.urls.len(),
        config.urls.join(", ")
    ))
}

/// Every node paired with the next one (the last with the first).
fn node_pairs(config: &CheckConfig) -> Vec<(Ctx<'_>, Ctx<'_>)> {
    let n = config.urls.len();
    (0..n).map(|i| (Ctx::at(config, &config.urls[i]), Ctx::at(config, &config.urls[(i + 1) % n]))).collect()
}

/// The `:`-joined causes of an error, so "connection refused" is not hidden behind "error
/// sending request".
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

impl Ctx<'_> {
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
        let (cursor, missing) = self.resume_on(self, lat).await?;
        Ok(format!(
            "dropped the socket after seq {cursor}; resume replayed exactly the {missing} missing events, then live"
        ))
    }

    /// Opens a socket here, receives part of a run, drops it, publishes the rest here, resumes on
    /// `other` and checks that exactly the missing events are replayed, then one live event.
    /// Returns the cursor resumed from and the number of events replayed.
    async fn resume_on(&self, other: &Ctx<'_>, lat: &mut Latency) -> Result<(u64, usize), Failure> {
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
        let (conn, reopened) = other.open(&user, Some((cursor, &opened.epoch))).await?;
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
        Ok((cursor, missing.len()))
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
            let url = format!("{}/v1/events", self.url.trim_end_matches('/'));
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
            let wrong_key = Ctx {
                publisher: Publisher::new(self.url, "herald-check-wrong-key"),
                ..Ctx::at(self.cfg, self.url)
            };
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
