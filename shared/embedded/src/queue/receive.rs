//! How a receive waits for messages: as SQS's long poll does, up to `wait` for the first one,
//! woken by a send.
//!
//! Before it sleeps, one receive at a time lingers: it looks again for [`LINGER`] without
//! sleeping, as Go's scheduler spins before it parks. Under load the next message is usually
//! that close, and taking it without a wake-up saves the sender a thread hand-off (on a virtual
//! machine, a vCPU's way out of idle). The protocol that keeps this from losing a wake-up:
//!
//! - a send enqueues its message under the lock, then wakes one sleeping receive unless a
//!   receive is lingering, which looks again before it stops lingering;
//! - a lingering receive gives up its claim before it goes to sleep, and a sleeping receive
//!   registers for a wake-up before it looks at the queue one last time.
//!
//! So a message sent while a receive lingers is found by it, or by the look that follows, and
//! one sent after the claim is given up wakes a sleeper: none waits for a long poll to end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{EmbeddedQueue, ReceivedMessage};

/// How long a receive that finds nothing looks again before it sleeps until a send wakes it.
pub(super) const LINGER: Duration = Duration::from_micros(50);

/// Whether a receive is lingering; at most one is.
#[derive(Default)]
pub(super) struct Lingering(AtomicBool);

impl Lingering {
    fn now(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The claim to linger, if no other receive holds it.
    fn claim(&self) -> Option<Claim<'_>> {
        (!self.0.swap(true, Ordering::SeqCst)).then_some(Claim(&self.0))
    }
}

/// A lingering receive's claim, given up when dropped, also when the receive is cancelled, so
/// that sends never stop waking receives.
struct Claim<'q>(&'q AtomicBool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl EmbeddedQueue {
    /// Receives up to `max` messages, waiting up to `wait` for the first one (long polling).
    pub async fn receive(&self, max: usize, wait: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + wait;
        if let Some(claim) = self.lingering.claim() {
            let batch = self.linger(max).await;
            drop(claim);
            if !batch.is_empty() {
                return self.handed_out(batch);
            }
        }
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.try_receive(max);
            let now = Instant::now();
            if !batch.is_empty() {
                return self.handed_out(batch);
            }
            if now >= deadline {
                return batch;
            }
            let next_expiry = self.lock().leases.first().map(|(at, _, _)| *at);
            let until = next_expiry.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Looks for messages for [`LINGER`] without sleeping; an empty batch if none came.
    async fn linger(&self, max: usize) -> Vec<ReceivedMessage> {
        let until = std::time::Instant::now() + LINGER;
        loop {
            let batch = self.try_receive(max);
            if !batch.is_empty() || std::time::Instant::now() >= until {
                return batch;
            }
            // The thread first offers its vCPU to any other thread waiting for one (the sender
            // of the next message, often): without that, a busy machine made it wait for the
            // end of this thread's time slice. With nothing waiting, it comes straight back.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }

    /// Wakes a sleeping receive, unless one is lingering and will find the news itself.
    pub(super) fn wake_one(&self) {
        if !self.lingering.now() {
            self.wake.notify_one();
        }
    }

    /// A batch a receive hands out. One message wakes one poller; if it left work behind, the
    /// wake passes on.
    fn handed_out(&self, batch: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
        if !self.lock().ready.is_empty() {
            self.wake.notify_one();
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::tests::{queue, queued};

    /// The wake-up protocol on tokio's paused clock: time moves only when every task waits, so
    /// a message left for a long poll to find would show as the clock jumping by that poll's
    /// twenty seconds. Sends are made while a receive lingers (the send wakes no one), while
    /// every receive sleeps (the send wakes one), and at once.
    #[tokio::test(start_paused = true)]
    async fn no_message_waits_for_a_long_poll_to_end() {
        let q = Arc::new(queue(60_000, 5));
        let total = 90u32;
        let receivers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    loop {
                        for message in q.receive(1, Duration::from_secs(20)).await {
                            assert!(q.delete(&message.receipt_handle));
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let mut sent_while_lingering = 0;
        for n in 1..=total {
            match n % 3 {
                0 => {
                    for _ in 0..10_000 {
                        if q.lingering.now() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    sent_while_lingering += usize::from(q.lingering.now());
                }
                1 => tokio::time::sleep(Duration::from_millis(1)).await,
                _ => {}
            }
            q.send_message(queued(&format!("g{}", n % 4), n));
        }
        // Every message is taken within a millisecond of virtual time of its send.
        while q.depth() != Default::default() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                q.depth()
            );
        }
        assert!(sent_while_lingering > 0, "no send met a lingering receive");
        assert!(
            started.elapsed() < Duration::from_millis(u64::from(total)),
            "a message waited: {:?}",
            started.elapsed()
        );
        for receiver in receivers {
            receiver.abort();
        }
    }

    /// The same under real threads: whatever the interleaving of senders, lingering and
    /// sleeping receives and deletes, every message reaches a receive at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_reaches_a_receive_at_once_while_one_lingers_and_others_sleep() {
        let q = Arc::new(queue(60_000, 5));
        let (sender_count, per_sender) = (4u32, 60u32);
        let started = std::time::Instant::now();
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = 0;
                    loop {
                        let batch = q.receive(1, Duration::from_secs(2)).await;
                        if batch.is_empty() {
                            return got;
                        }
                        for message in batch {
                            assert!(q.delete(&message.receipt_handle));
                            got += 1;
                        }
                    }
                })
            })
            .collect();
        let senders: Vec<_> = (0..sender_count)
            .map(|s| {
                let q = q.clone();
                tokio::spawn(async move {
                    for n in 1..=per_sender {
                        // Now and then slower than the linger, so that receives fall asleep.
                        let pause = if n % 3 == 0 { 400 } else { 20 };
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                        q.send_message(queued(&format!("g{}", n % 5), s * 1000 + n));
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
        let mut received = 0;
        for receiver in receivers {
            received += receiver.await.unwrap();
        }
        assert_eq!(received, (sender_count * per_sender) as usize);
        // Every receive ends two seconds after the last message it took; a message that had to
        // wait for a long poll to end would add two more.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn long_polling_wakes_on_send() {
        let q = Arc::new(queue(60_000, 5));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(10, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        q.send_message(queued("a", 1));
        let batch = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(batch[0].body(), "a/1");
    }

    #[tokio::test(start_paused = true)]
    async fn long_polling_returns_empty_after_the_wait() {
        let q = queue(60_000, 5);
        assert!(q.receive(10, Duration::from_millis(50)).await.is_empty());
    }
}
