//! A future polled only once it asked to be woken.
//!
//! A connection's loop waits on its user's log and, beside it, on things that almost never
//! happen: the server's drain, an operator's disconnect, the token's expiry, the heartbeat.
//! `tokio::select!` polls every branch each time the loop wakes, and each of those polls costs
//! something even when nothing happened (the drain's future takes a lock, a watch receiver joins
//! and leaves a waiter list, a timer checks its entry). At a frame per wake-up that was ~4 % of
//! the server's CPU. A [`Gate`] hands the inner future a waker of its own and skips the poll
//! until that waker fires, so a quiet signal costs one atomic operation per wake-up.
//!
//! The task's waker is handed to the signal once, not at every poll: a task keeps its waker for
//! its life, and registering it each time (as `AtomicWaker` does; it also gives the waker up at
//! each wake) cost two more atomic operations per gate per wake-up, 1.7 % of the server's CPU
//! with three gates per connection.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Skips polling what it guards until the guarded future's waker fired (see the module docs).
///
/// The guarded future must follow the usual contract: when it returns `Pending`, it has arranged
/// to wake the waker it was given. After `Ready`, the next poll goes through (an interval's next
/// tick must register again).
pub struct Gate {
    signal: Arc<Signal>,
    waker: Waker,
    /// The task waker last given to the signal.
    registered: Option<Waker>,
}

/// The waker the guarded future gets: it marks the gate open and wakes the task that polls it.
struct Signal {
    woken: AtomicBool,
    /// Set by the task's first poll, replaced only if the task's waker changes; a wake-up locks
    /// it, uncontended, and only when the signal fires.
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock() {
            task.wake_by_ref();
        }
    }
}

impl Gate {
    /// An open gate: the first poll goes through, so the guarded future can register.
    pub fn new() -> Self {
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), task: Mutex::new(None) });
        let waker = Waker::from(signal.clone());
        Self { signal, waker, registered: None }
    }

    /// Runs `poll` with the gate's waker if it fired since the last `Pending` (or the gate was
    /// [`Gate::open`]ed); `Pending` otherwise, with `cx`'s task woken when it fires.
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Before the check below: a signal that fires after it must find this waker.
            *self.signal.task.lock() = Some(cx.waker().clone());
            self.registered = Some(cx.waker().clone());
        }
        if !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let result = poll(&mut Context::from_waker(&self.waker));
        if result.is_ready() {
            self.signal.woken.store(true, Ordering::Release);
        }
        result
    }

    /// Lets the next poll through: for a change the guarded future must see without a wake-up
    /// (a timer moved to a new deadline).
    pub fn open(&self) {
        self.signal.woken.store(true, Ordering::Release);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("woken", &self.signal.woken.load(Ordering::Relaxed)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{Future, poll_fn};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts how often the guarded closure runs.
    fn counted<'a>(
        polls: &'a AtomicUsize,
        mut inner: impl FnMut(&mut Context<'_>) -> Poll<()> + 'a,
    ) -> impl FnMut(&mut Context<'_>) -> Poll<()> + 'a {
        move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            inner(cx)
        }
    }

    #[tokio::test]
    async fn a_quiet_future_is_polled_once_however_often_the_task_wakes() {
        let mut gate = Gate::new();
        let polls = AtomicUsize::new(0);
        let mut inner = counted(&polls, |_| Poll::Pending);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        for _ in 0..100 {
            tx.send(()).unwrap();
        }
        drop(tx);
        // The task wakes 100 times for the channel; the gated future was polled at the first only.
        let mut received = 0;
        poll_fn(|cx| {
            loop {
                if gate.poll(cx, &mut inner).is_ready() {
                    return Poll::Ready(());
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(())) => received += 1,
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        assert_eq!(received, 100);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_wake_lets_the_next_poll_through_and_ready_keeps_it_open() {
        let mut gate = Gate::new();
        let mut interval = tokio::time::interval(Duration::from_millis(5));
        // Three ticks in a row, each awaited through the gate: every one arrives.
        for _ in 0..3 {
            poll_fn(|cx| gate.poll(cx, |cx| interval.poll_tick(cx).map(|_| ()))).await;
        }
        let sleep = tokio::time::sleep(Duration::from_millis(5));
        tokio::pin!(sleep);
        let mut gate = Gate::new();
        poll_fn(|cx| gate.poll(cx, |cx| sleep.as_mut().poll(cx))).await;
    }

    #[tokio::test]
    async fn open_lets_a_poll_through_without_a_wake() {
        let mut gate = Gate::new();
        let polls = AtomicUsize::new(0);
        let mut inner = counted(&polls, |_| Poll::Pending);
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        assert!(gate.poll(&mut cx, &mut inner).is_pending());
        assert!(gate.poll(&mut cx, &mut inner).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        gate.open();
        assert!(gate.poll(&mut cx, &mut inner).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
