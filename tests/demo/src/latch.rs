//! Orders the events of a burst without sleeping: a count-down [`Latch`], and [`until`], which
//! waits for a condition that the code changing it announces on a [`Notify`].

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tokio::sync::Notify;

/// Opens once [`arrive`](Self::arrive) has been called `count` times; [`wait`](Self::wait)
/// returns from then on. Arrivals past `count` change nothing.
#[derive(Debug)]
pub struct Latch {
    left: AtomicUsize,
    opened: Notify,
}

impl Latch {
    /// A latch that opens after `count` arrivals (at once for 0).
    pub fn new(count: usize) -> Self {
        Self { left: AtomicUsize::new(count), opened: Notify::new() }
    }

    /// Counts one arrival; the last one opens the latch.
    pub fn arrive(&self) {
        if self.left.fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1)) == Ok(1) {
            self.opened.notify_waiters();
        }
    }

    /// Whether the latch is open.
    pub fn is_open(&self) -> bool {
        self.left.load(SeqCst) == 0
    }

    /// Waits until the latch is open.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait(&self) {
        until(&self.opened, || self.is_open()).await;
    }
}

/// Waits until `ready()` holds, checking it again each time `changed` is notified (with
/// `notify_waiters`, by whoever changes what `ready` reads, after changing it).
///
/// # Cancel safety
///
/// Cancel safe: it only waits.
pub async fn until(changed: &Notify, ready: impl Fn() -> bool) {
    loop {
        // Registered before the check, so a change between the check and the await is not missed.
        let notified = changed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if ready() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_latch_opens_on_its_last_arrival_from_other_threads() {
        let latch = Arc::new(Latch::new(3));
        let waiter = tokio::spawn({
            let latch = latch.clone();
            async move { latch.wait().await }
        });
        for _ in 0..2 {
            let latch = latch.clone();
            std::thread::spawn(move || latch.arrive()).join().unwrap();
        }
        assert!(!latch.is_open() && !waiter.is_finished());
        let last = latch.clone();
        std::thread::spawn(move || last.arrive()).join().unwrap();
        tokio::time::timeout(Duration::from_secs(30), waiter).await.expect("watchdog").unwrap();
        latch.arrive(); // past the count: still open
        assert!(latch.is_open());
        Latch::new(0).wait().await;
    }
}
