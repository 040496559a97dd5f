//! What every scenario does: open sockets, publish within the timeout, deliver runs to users and
//! verify what each socket received.

use super::scenarios::{CheckConfig, error_chain};
use super::verify::{Failure, Latency, Planned, check_owner, planned_run, receive, sentinel};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use herald_client::{AuthMode, ClientError, Connection, Opened, Publisher, sign_token};
use herald_protocol::Receipt;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Everything one scenario needs to talk to one node.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a CheckConfig,
    /// The node's base URL.
    pub(super) url: &'a str,
    pub(super) publisher: Publisher,
}

impl<'a> Ctx<'a> {
    /// The first node, which the single-node scenarios check.
    pub(super) fn new(cfg: &'a CheckConfig) -> Self {
        Self::at(cfg, &cfg.urls[0])
    }

    /// The node at `url`.
    pub(super) fn at(cfg: &'a CheckConfig, url: &'a str) -> Self {
        Ctx { cfg, url, publisher: Publisher::new(url, &cfg.api_key) }
    }

    pub(super) fn token(&self, user: &str) -> String {
        sign_token(&self.cfg.jwt_secret, user, Duration::from_secs(3600))
    }

    /// Opens a socket for `user` and reads through `synced`, within the timeout.
    pub(super) async fn open(
        &self,
        user: &str,
        cursor: Option<(u64, &str)>,
    ) -> Result<(Connection, Opened), Failure> {
        let token = self.token(user);
        let open = Connection::open(self.url, &token, cursor, self.cfg.timeout);
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
    pub(super) async fn open_fresh(&self, user: &str) -> Result<(Connection, Opened), Failure> {
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
    pub(super) async fn post(&self, body: &Value) -> Result<(u16, Value), Failure> {
        match tokio::time::timeout(self.cfg.timeout, self.publisher.post(body)).await {
            Err(_) => {
                Err(Failure::Other(format!("POST /v1/events got no answer within {:?}", self.cfg.timeout)))
            }
            Ok(Err(e)) => Err(Failure::Other(format!("POST /v1/events: {}", error_chain(&e)))),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Publishes one event that must be accepted; notes when it was sent.
    pub(super) async fn publish(&self, p: &Planned, lat: &mut Latency) -> Result<Receipt, Failure> {
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
    pub(super) async fn publish_all(&self, plan: &[Planned]) -> (Latency, Result<Vec<Receipt>, Failure>) {
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
    pub(super) async fn refused(
        &self,
        what: &str,
        p: &Planned,
        status: u16,
        code: Option<&str>,
    ) -> Result<(), Failure> {
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
    pub(super) async fn deliver(
        &self,
        users: &[String],
        tabs: usize,
        lat: &mut Latency,
    ) -> Result<usize, Failure> {
        self.deliver_via(self, users, tabs, lat).await
    }

    /// [`Ctx::deliver`] with the sockets on this node and the publishing on `via`.
    pub(super) async fn deliver_via(
        &self,
        via: &Ctx<'_>,
        users: &[String],
        tabs: usize,
        lat: &mut Latency,
    ) -> Result<usize, Failure> {
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
            futures_util::future::join_all(users.iter().map(|u| via.publish_all(&plans[u]))).await;
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
                let r = via.publish(p, &mut one).await;
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

    /// Connecting with `token` must be refused with 401 before the upgrade.
    pub(super) async fn socket_refused(&self, what: &str, token: &str) -> Result<(), Failure> {
        let connect = Connection::connect(self.url, token, None, AuthMode::Header);
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
}
