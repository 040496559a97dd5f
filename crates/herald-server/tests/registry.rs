//! The registry's promises (docs/architecture.md): one manager per user, race-free, no shared fallback,
//! bounded by idle eviction, and emit that never loses an event for an offline user.

use herald_protocol::EventKind;
use herald_server::engine::MemoryEngine;
use herald_server::log::Retention;
use herald_server::registry::{Event, Registry, UserContext};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn registry(idle: Duration) -> Arc<Registry> {
    let engine = Arc::new(MemoryEngine::new(Retention { max_events: 100, ttl: Duration::from_secs(60) }));
    Arc::new(Registry::new(engine, idle, 32))
}

#[test]
fn same_user_same_manager_different_user_different_manager() {
    let registry = registry(Duration::from_secs(60));
    let alice = UserContext::new("alice").unwrap();
    let a1 = registry.manager(&alice);
    let a2 = registry.manager(&alice);
    let b = registry.manager(&UserContext::new("bob").unwrap());
    assert!(Arc::ptr_eq(&a1, &a2));
    assert!(!Arc::ptr_eq(&a1, &b));
    assert_eq!(registry.len(), 2);
}

#[test]
fn there_is_no_anonymous_or_malformed_context() {
    assert!(UserContext::new("").is_err());
    assert!(UserContext::new("two words").is_err());
    assert!(UserContext::new(&"x".repeat(500)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_tasks_for_ten_users_create_exactly_ten_managers() {
    let registry = registry(Duration::from_secs(60));
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|t| {
            let registry = registry.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                (0..10)
                    .map(|u| {
                        let user = format!("user-{}", (u + t) % 10);
                        (user.clone(), registry.manager(&UserContext::new(&user).unwrap()))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen: HashMap<String, Arc<herald_server::registry::UserManager>> = HashMap::new();
    for task in tasks {
        for (user, manager) in task.await.unwrap() {
            let first = seen.entry(user).or_insert_with(|| manager.clone());
            assert!(Arc::ptr_eq(first, &manager), "two managers for one user");
        }
    }
    assert_eq!(seen.len(), 10);
    assert_eq!(registry.len(), 10);
}

#[test]
fn ten_thousand_idle_users_are_evicted_and_held_ones_stay() {
    let registry = registry(Duration::from_millis(0));
    for i in 0..10_000 {
        registry.manager(&UserContext::new(&format!("u{i}")).unwrap());
    }
    let held = registry.manager(&UserContext::new("u1").unwrap());
    assert_eq!(registry.len(), 10_000);
    let evicted = registry.evict_idle(Instant::now() + Duration::from_millis(1));
    assert_eq!(evicted, 9_999);
    assert_eq!(registry.len(), 1);
    drop(held);
    registry.evict_idle(Instant::now() + Duration::from_millis(1));
    assert!(registry.is_empty());
}

#[tokio::test]
async fn emit_to_an_offline_user_is_kept_and_survives_manager_eviction() {
    let registry = registry(Duration::from_millis(0));
    let ctx = UserContext::new("offline").unwrap();
    let manager = registry.manager(&ctx);
    let first = manager.emit(Event::new(EventKind::AgentStarted, "r")).await.unwrap();
    assert_eq!((first.seq, first.connections), (1, 0));
    drop(manager);
    assert_eq!(registry.evict_idle(Instant::now() + Duration::from_millis(1)), 1);

    // A new manager continues the same log: seq and epoch live in the engine.
    let manager = registry.manager(&ctx);
    let second = manager
        .emit(Event::new(EventKind::ToolExecuting, "r").data(serde_json::json!({"tool_name": "search"})))
        .await
        .unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.epoch, first.epoch);
    let log = manager.open_log().await.unwrap();
    assert_eq!(log.head(), 2);

    // Field and run rules apply to emit too.
    assert!(manager.emit(Event::new(EventKind::ToolExecuting, "r")).await.is_err());
    assert!(manager.emit(Event::new(EventKind::AgentThinking, "never-started")).await.is_err());
}

#[tokio::test]
async fn the_connection_limit_is_per_user() {
    let registry = registry(Duration::from_secs(60));
    let m = registry.manager(&UserContext::new("u").unwrap());
    let slots: Vec<_> = (0..32).map(|_| m.connect().unwrap()).collect();
    assert!(m.connect().is_err());
    drop(slots);
    assert!(m.connect().is_ok());
}
