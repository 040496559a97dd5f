//! Appending: read what a batch's validation depends on, plan it with the shared planner, write
//! it with the append script (compare-and-set: a concurrent change is read and planned again),
//! and keep the node-wide index of active runs that stall detection reads.

use super::conn::Commands;
use super::wire::{self, AppendCall, AppendReply, EventCall, UserCall};
use super::{RedisEngine, engine_error};
use crate::engine::plan::{self, Part, Planned, Written};
use crate::engine::{AppendError, EngineError, FrameEncoder, RunScan, StalledRun, new_epoch};
use foldhash::HashMap;
use futures_util::future::{join_all, try_join_all};
use herald_protocol::{EventInput, EventKind, Receipt, RunState, UserId};
use parking_lot::Mutex;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{AsyncCommands, FromRedisValue, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

/// Attempts of one user's append when concurrent publishers keep changing its run states.
const MAX_APPEND_ATTEMPTS: usize = 20;

/// How stale a run's last-activity score in the active-runs index may get (stall detection is
/// accurate to within this).
const INDEX_REFRESH: Duration = Duration::from_secs(1);

/// How long an append waits for its replicas (`--redis-wait-replicas`) before it is refused.
const WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a part's validation read from Redis.
#[derive(Debug, Default)]
struct Read {
    epoch: Option<String>,
    /// Per event of the part: the seq its (publisher's) id already has.
    known: Vec<Option<u64>>,
    /// Run states exactly as stored, in `Part::runs` order (a run whose text is unchanged is not
    /// written).
    stored: Vec<Option<String>>,
    /// The version of the user's run states these were read at ([`wire::runs_version`]; the
    /// script compares it).
    runs_version: String,
    /// The same, parsed.
    states: Vec<Option<RunState>>,
    /// Taken from [`KnownRuns`], not read: possibly stale.
    remembered: bool,
}

/// A part planned from what was read.
struct Prepared {
    read: Read,
    planned: Planned,
}

impl RedisEngine {
    /// Appends a batch: see [`crate::engine::Engine::append`].
    pub(super) async fn append_batch(&self, events: &[EventInput]) -> Result<Vec<Receipt>, AppendError> {
        let numbered = events.len() > 1;
        let parts = plan::split(events);
        // Phase 1: every user's part is validated before anything is written, so a batch with
        // a broken rule anywhere appends nothing.
        let reads = try_join_all(parts.iter().map(|p| self.known_or_read(p))).await?;
        let mut prepared = Vec::with_capacity(parts.len());
        let mut errors = Vec::new();
        for (part, mut read) in parts.iter().zip(reads) {
            let mut plan = part.plan(&read.known, &read.states, numbered);
            if plan.is_err() && read.remembered {
                // Refused against what this node remembers: another node may have moved the
                // runs on since; only what Redis holds decides.
                read = self.read_part(part).await?;
                plan = part.plan(&read.known, &read.states, numbered);
            }
            match plan {
                Ok(planned) => prepared.push(Prepared { read, planned }),
                Err(e) => errors.push(e),
            }
        }
        if let Some(error) = plan::first_error(errors) {
            return Err(error);
        }
        // Phase 2: one script call writes every part, all or nothing — or, on Redis Cluster,
        // one call per user (a script may only touch one slot), written concurrently over the
        // multiplexed connection. A group that met a concurrent change is planned and written
        // again.
        let mut receipts: Vec<Option<Receipt>> = vec![None; events.len()];
        let mut pending: Vec<Vec<usize>> = if self.one_user_per_script {
            (0..parts.len()).map(|i| vec![i]).collect()
        } else {
            vec![(0..parts.len()).collect()]
        };
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let written = join_all(pending.iter().map(|group| self.commit(group, &parts, &prepared))).await;
            let mut conflicts = Vec::new();
            for (group, result) in pending.into_iter().zip(written) {
                match result? {
                    Some(per_part) => {
                        for (&i, part_receipts) in group.iter().zip(per_part) {
                            for ((index, _), receipt) in parts[i].events.iter().zip(part_receipts) {
                                receipts[*index] = Some(receipt);
                            }
                        }
                    }
                    None => conflicts.push(group),
                }
            }
            if conflicts.is_empty() {
                return Ok(receipts.into_iter().map(|r| r.expect("every event is in one part")).collect());
            }
            for &i in conflicts.iter().flatten() {
                let read = self.read_part(&parts[i]).await?;
                let planned = parts[i].plan(&read.known, &read.states, numbered)?;
                prepared[i] = Prepared { read, planned };
            }
            pending = conflicts;
        }
        Err(EngineError::new("append kept conflicting with concurrent publishers; retry with the same ids")
            .into())
    }

    /// What validation of one user's part depends on, from what this node last stored or read
    /// when it knows every run the part touches ([`KnownRuns`]), else read from Redis. Known
    /// states may be stale, and publisher ids are assumed new: the script compares both (the
    /// states by their version) and a conflict reads them from Redis.
    async fn known_or_read(&self, part: &Part<'_>) -> Result<Read, AppendError> {
        let Some((stored, runs_version)) = self.known_runs.get(part.user, &part.runs) else {
            return self.read_part(part).await;
        };
        let states = part
            .runs
            .iter()
            .zip(&stored)
            .map(|(run, text)| parse_state(run, text.as_deref()))
            .collect::<Result<_, _>>()?;
        Ok(Read {
            epoch: None,
            known: vec![None; part.events.len()],
            stored,
            states,
            runs_version,
            remembered: true,
        })
    }

    /// Reads what validation of one user's part depends on: its epoch, which of its publisher ids
    /// the log already has, and the states of the runs it touches with their version. A part
    /// with neither ids nor runs depends on nothing: no read.
    async fn read_part(&self, part: &Part<'_>) -> Result<Read, AppendError> {
        let keyed: Vec<usize> = (0..part.events.len()).filter(|&k| part.keyed(k)).collect();
        if keyed.is_empty() && part.runs.is_empty() {
            return Ok(Read::default());
        }
        let user = part.user;
        let mut pipe = redis::pipe();
        // The epoch (for the receipts of duplicates) and the run states' version; a part with
        // ids or runs makes this a pipeline of two commands or more, whose reply is an array.
        pipe.cmd("HMGET").arg(self.key(user, "meta")).arg("epoch").arg("rv");
        for &k in &keyed {
            pipe.zscore(self.key(user, "ids"), &part.ids[k]);
        }
        for run in &part.runs {
            pipe.hget(self.key(user, "runs"), run);
        }
        let mut con = self.commands.clone();
        let values: Vec<Value> = pipe.query_async(&mut con).await.map_err(engine_error)?;
        let mut values = values.into_iter();
        let (epoch, changes): (Option<String>, Option<u64>) = take(&mut values)?;
        let runs_version = wire::runs_version(epoch.as_deref().unwrap_or_default(), changes.unwrap_or(0));
        let mut read = Read { epoch, known: vec![None; part.events.len()], runs_version, ..Read::default() };
        for k in keyed {
            read.known[k] = take(&mut values)?;
        }
        for run in &part.runs {
            let stored: Option<String> = take(&mut values)?;
            read.states.push(parse_state(run, stored.as_deref())?);
            read.stored.push(stored);
        }
        Ok(read)
    }

    /// Writes the prepared parts `group` with one call of the append script (all or nothing);
    /// `None` when a concurrent publisher changed what they were validated against (plan
    /// again). Receipts come back per part, in `group` order.
    async fn commit(
        &self,
        group: &[usize],
        parts: &[Part<'_>],
        prepared: &[Prepared],
    ) -> Result<Option<Vec<Vec<Receipt>>>, AppendError> {
        // With replicas to wait for, a part of duplicates only is written too (no events: the
        // script rewrites the user's meta) so that its receipt also waits for them: the first
        // append of a retried id may be on the master alone (its wait failed, hence the retry),
        // and only a write of this connection lets WAIT cover it.
        let writing: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| self.wait_replicas > 0 || parts[i].fresh(&prepared[i].planned).next().is_some())
            .collect();
        let mut written: Vec<Option<Written>> = vec![None; parts.len()];
        if !writing.is_empty() {
            let wall = SystemTime::now();
            let mut call = AppendCall {
                max_events: self.retention.max_events,
                ttl_ms: self.retention.ttl.as_millis() as u64,
                publish: self.commands.publish_command(),
                now_ms: wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
                users: Vec::with_capacity(writing.len()),
            };
            let mut texts = Vec::with_capacity(writing.len());
            let encoder = FrameEncoder::new(wall);
            for &i in &writing {
                let (user_call, after) = self.user_call(&parts[i], &prepared[i], wall, &encoder);
                call.users.push(user_call);
                texts.push(after);
            }
            // Pinned: the WAIT below must go over the connections that wrote.
            let mut con = self.commands.pinned();
            let reply = self.eval_append(&mut con, &call).await.map_err(engine_error)?;
            match wire::decode_reply(reply, writing.len()).map_err(engine_error)? {
                AppendReply::Conflict(why) => {
                    debug!(users = writing.len(), why, "append conflict, validating again");
                    return Ok(None);
                }
                AppendReply::Ok(users) => {
                    if self.wait_replicas > 0 {
                        self.wait_for_replicas(&mut con, &call.users[0].keys[0]).await?;
                    }
                    for ((&i, user), texts) in writing.iter().zip(&users).zip(&texts) {
                        let (part, after) = (&parts[i], &prepared[i].planned.after);
                        self.known_runs.remember(part.user, &user.runs_version, &part.runs, texts, after);
                    }
                    for (&i, user) in writing.iter().zip(users) {
                        written[i] = Some(Written {
                            epoch: user.epoch,
                            connections: user.receivers,
                            first_seq: user.first_seq,
                        });
                    }
                }
            }
            self.index_runs(writing.iter().map(|&i| (&parts[i], &prepared[i]))).await;
            for &i in &writing {
                self.compact_long_runs(&parts[i], parts[i].fresh(&prepared[i].planned));
            }
        }
        Ok(Some(
            group
                .iter()
                .map(|&i| {
                    // Nothing written: every event was a duplicate, answered with the epoch read.
                    let written = written[i].take().unwrap_or_else(|| Written {
                        epoch: prepared[i].read.epoch.clone().unwrap_or_default(),
                        connections: 0,
                        first_seq: 0,
                    });
                    parts[i].receipts(&prepared[i].planned, &written)
                })
                .collect(),
        ))
    }

    /// Calls the append script with `call`'s keys and arguments written straight into one
    /// command buffer (a `ScriptInvocation` would copy each argument into its own buffer
    /// first); loads the script when Redis does not have it (first call, or Redis restarted).
    async fn eval_append(&self, con: &mut Commands, call: &AppendCall) -> redis::RedisResult<Value> {
        let (keys, args) = call.encode();
        let bytes = keys.iter().map(|k| k.len()).chain(args.iter().map(|a| a.len())).sum::<usize>();
        let mut eval = redis::Cmd::with_capacity(3 + keys.len() + args.len(), bytes + 64);
        eval.arg("EVALSHA").arg(self.script.get_hash()).arg(keys.len());
        for key in &keys {
            eval.arg(*key);
        }
        for arg in &args {
            eval.arg(&arg[..]);
        }
        match eval.query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                eval.query_async(con).await
            }
            reply => reply,
        }
    }

    /// One user's section of the script call (the version of the run states to compare, the
    /// runs to set, the events to append), and the text of each run's state after it.
    fn user_call(
        &self,
        part: &Part<'_>,
        prepared: &Prepared,
        wall: SystemTime,
        encoder: &FrameEncoder,
    ) -> (UserCall, Vec<String>) {
        let user = part.user;
        let after: Vec<String> = prepared
            .planned
            .after
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|s| serde_json::to_string(s).expect("run states serialize"))
                    .unwrap_or_default()
            })
            .collect();
        let runs = part
            .runs
            .iter()
            .zip(&prepared.read.stored)
            .zip(&after)
            .filter(|((_, before), after)| before.as_deref().unwrap_or_default() != after.as_str())
            .map(|((run, _), after)| ((*run).to_owned(), after.clone()))
            .collect();
        let wall_ms = wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut tail = Vec::with_capacity(256);
        let events = part
            .fresh(&prepared.planned)
            .map(|k| {
                let event = part.events[k].1;
                tail.clear();
                encoder.tail(&mut tail, &part.ids[k], event);
                let run_id = event.run_id.as_deref().unwrap_or_default();
                let kind = event.kind.as_str();
                let keyed = part.keyed(k);
                // The script reads an id only to check and record it, and a run only where it
                // starts or ends: other events send neither (every byte the script receives is
                // hashed into a Lua string).
                let starts_or_ends = event.kind == EventKind::AgentStarted || event.kind.is_terminal();
                EventCall {
                    id: if keyed { part.ids[k].clone() } else { String::new() },
                    keyed,
                    run_id: if starts_or_ends { run_id.to_owned() } else { String::new() },
                    kind,
                    record: wire::encode_record(wall_ms, &part.ids[k], run_id, kind, &tail),
                }
            })
            .collect();
        let [meta, log, ids, runs_key, live, channel] =
            self.keys(user, ["meta", "log", "ids", "runs", "live", "ch"]);
        let call = UserCall {
            keys: [meta, log, ids, runs_key, live],
            new_epoch: new_epoch(),
            channel,
            runs_version: (!part.runs.is_empty()).then(|| prepared.read.runs_version.clone()),
            runs,
            events,
        };
        (call, after)
    }

    /// Keeps the node-wide index of active runs (score: last activity, ms) that stall detection
    /// and the active-runs gauge read. Best effort: it is a separate key (not in the users' slots).
    /// Events outside runs, and runs that never had a state, touch nothing.
    async fn index_runs<'p>(&self, written: impl Iterator<Item = (&'p Part<'p>, &'p Prepared)>) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for (part, prepared) in written {
            for ((run, before), after) in
                part.runs.iter().zip(&prepared.read.states).zip(&prepared.planned.after)
            {
                let member = format!("{}\n{run}", part.user);
                match after {
                    Some(state) if !state.is_ended() => {
                        let activity = part.events.iter().any(|(_, e)| {
                            e.run_id.as_deref() == Some(*run) && e.kind != EventKind::RunStalled
                        });
                        if activity && self.index_due(&member, now_ms) {
                            pipe.zadd(self.active_runs_key(), &member, now_ms).ignore();
                            commands += 1;
                        }
                    }
                    _ if before.is_some() => {
                        self.indexed.lock().remove(&member);
                        pipe.zrem(self.active_runs_key(), &member).ignore();
                        commands += 1;
                    }
                    _ => {}
                }
            }
        }
        if commands == 0 {
            return;
        }
        let mut con = self.commands.clone();
        if let Err(e) = pipe.query_async::<()>(&mut con).await {
            warn!("could not update the active-runs index: {e}");
        }
    }

    /// True when this node has not recorded activity of the run `member` for [`INDEX_REFRESH`]:
    /// a run's last-activity score is kept to within that, not rewritten on every batch.
    fn index_due(&self, member: &str, now_ms: u64) -> bool {
        let mut indexed = self.indexed.lock();
        match indexed.get(member) {
            Some(&at) if now_ms.saturating_sub(at) < INDEX_REFRESH.as_millis() as u64 => false,
            _ => {
                indexed.insert(member.to_owned(), now_ms);
                true
            }
        }
    }

    /// Forgets the index marks older than [`INDEX_REFRESH`] (they would be due anyway).
    pub(super) fn prune_index_marks(&self) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        self.indexed.lock().retain(|_, at| now_ms.saturating_sub(*at) < INDEX_REFRESH.as_millis() as u64);
    }

    /// Waits until `wait_replicas` replicas of the master that owns `key` confirm every write
    /// this connection made so far (`WAIT`); an error (503, retry with the same ids) otherwise.
    async fn wait_for_replicas(&self, con: &mut Commands, key: &str) -> Result<(), EngineError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.wait_replicas).arg(WAIT_TIMEOUT.as_millis() as u64);
        let confirmed: u64 = match con {
            Commands::Single(single) => wait.query_async(single).await,
            Commands::Cluster(cluster) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                cluster
                    .get()
                    .route_command(wait, routing)
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(redis::RedisError::from))
            }
        }
        .map_err(engine_error)?;
        if confirmed < u64::from(self.wait_replicas) {
            return Err(EngineError::new(format!(
                "the append reached {confirmed} of {} replicas in time (--redis-wait-replicas)",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    pub(super) fn active_runs_key(&self) -> String {
        format!("{}:active-runs", self.prefix)
    }

    /// Counts active runs and finds those silent for `stall_after`: see
    /// [`crate::engine::Engine::scan_runs`].
    pub(super) async fn scan_active_runs(&self, stall_after: Duration) -> Result<RunScan, EngineError> {
        let mut con = self.commands.clone();
        let key = self.active_runs_key();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let cutoff = now_ms.saturating_sub(stall_after.as_millis() as u64);
        let (active, silent): (usize, Vec<(String, u64)>) = redis::pipe()
            .zcard(&key)
            .zrangebyscore_withscores(&key, "-inf", cutoff)
            .query_async(&mut con)
            .await
            .map_err(engine_error)?;
        let mut scan = RunScan { active, stalled: Vec::new() };
        for (member, last_ms) in silent {
            let Some((user, run_id)) = member.split_once('\n') else { continue };
            let Ok(user) = UserId::parse(user) else { continue };
            let state: Option<String> =
                con.hget(self.key(&user, "runs"), run_id).await.map_err(engine_error)?;
            let state: Option<RunState> = state.and_then(|s| serde_json::from_str(&s).ok());
            match state {
                Some(s) if !s.is_ended() => {
                    if !s.is_stalled() {
                        scan.stalled.push(StalledRun {
                            user,
                            run_id: run_id.to_owned(),
                            silent_for: Duration::from_millis(now_ms.saturating_sub(last_ms)),
                            marker: last_ms,
                        });
                    }
                }
                _ => {
                    // Ended, or forgotten with its user's keys: no longer active.
                    let _: Result<(), _> = con.zrem(&key, &member).await;
                    scan.active = scan.active.saturating_sub(1);
                }
            }
        }
        Ok(scan)
    }
}

/// The state of `run` as stored ("" or none: no state).
fn parse_state(run: &str, stored: Option<&str>) -> Result<Option<RunState>, EngineError> {
    stored
        .filter(|s| !s.is_empty())
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| EngineError::caused(format!("corrupt run state of {run}"), e))
}

/// The state text of each active run as this node last stored it, with the version of the
/// user's run states it was stored at, so that an append to runs it knows needs no read before
/// the script: the script compares the version with Redis (compare-and-set), so a stale entry
/// costs one conflict and a read, never a wrong append. Runs that end are forgotten; the map is
/// bounded.
///
/// A version vouches only for the states recorded with it: another node may have changed any run
/// of the user since an older version, so runs remembered at different versions are read again.
#[derive(Debug, Default)]
pub(super) struct KnownRuns(Mutex<HashMap<(UserId, String), (String, String)>>);

/// Most runs [`KnownRuns`] holds before it starts over.
const MAX_KNOWN_RUNS: usize = 100_000;

impl KnownRuns {
    /// The stored texts of `runs` of `user` ("" for none) and the version they were stored at,
    /// if every one is known at one version.
    fn get(&self, user: &UserId, runs: &[&str]) -> Option<(Vec<Option<String>>, String)> {
        let known = self.0.lock();
        let mut key = (user.clone(), String::new());
        let mut version: Option<&str> = None;
        let mut texts = Vec::with_capacity(runs.len());
        for run in runs {
            (*run).clone_into(&mut key.1);
            let (text, at) = known.get(&key)?;
            if version.is_some_and(|v| v != at) {
                return None;
            }
            version = Some(at);
            texts.push(Some(text.clone()).filter(|t| !t.is_empty()));
        }
        Some((texts, version?.to_owned()))
    }

    /// Records what an append to `runs` of `user` stored: the version of the user's run states
    /// now, and per run the text now stored and the state it holds.
    fn remember(
        &self,
        user: &UserId,
        version: &str,
        runs: &[&str],
        texts: &[String],
        states: &[Option<RunState>],
    ) {
        let mut known = self.0.lock();
        if known.len() > MAX_KNOWN_RUNS {
            known.clear();
        }
        for ((run, text), state) in runs.iter().zip(texts).zip(states) {
            let key = (user.clone(), (*run).to_owned());
            match state {
                Some(state) if !state.is_ended() => known.insert(key, (text.clone(), version.to_owned())),
                _ => known.remove(&key),
            };
        }
    }
}

/// The next value of a pipeline's reply, typed; a short or mistyped reply is an error.
fn take<T: FromRedisValue>(values: &mut impl Iterator<Item = Value>) -> Result<T, EngineError> {
    let value = values.next().ok_or_else(|| EngineError::new("redis: a pipeline reply was short"))?;
    redis::from_redis_value(value).map_err(engine_error)
}
