//! A stand-in queue for handlers under test: it keeps what it is sent, the visibility changes
//! and drain continuations it is asked for, and can be told to fail.

use std::sync::Mutex;
use std::time::Duration;

use rockets::message::{Channel, Envelope};
use rockets::ports::{MessageQueue, QueueError, SourceQueue};

#[derive(Default)]
pub struct RecordingQueue {
    sent: Mutex<Vec<Envelope>>,
    hidden: Mutex<Vec<(String, Duration)>>,
    continued: Mutex<Vec<(Channel, u64)>>,
    /// Whether sends fail, as an unreachable queue's do.
    pub unavailable: bool,
}

impl RecordingQueue {
    /// A queue whose every send fails as unavailable.
    pub fn unavailable() -> Self {
        RecordingQueue {
            unavailable: true,
            ..RecordingQueue::default()
        }
    }

    /// The messages sent so far, in order.
    pub fn sent(&self) -> Vec<Envelope> {
        self.sent.lock().unwrap().clone()
    }

    /// The drain continuations queued so far: channel and marker.
    pub fn continued(&self) -> Vec<(Channel, u64)> {
        self.continued.lock().unwrap().clone()
    }

    /// The visibility changes asked for so far: receipt handle and how long it stays hidden.
    pub fn hidden(&self) -> Vec<(String, Duration)> {
        self.hidden.lock().unwrap().clone()
    }
}

impl MessageQueue for RecordingQueue {
    async fn send(&self, message: &Envelope) -> Result<(), QueueError> {
        if self.unavailable {
            return Err(QueueError::Unavailable("the stand-in queue is down".into()));
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }
}

impl SourceQueue for RecordingQueue {
    async fn hide(&self, records: Vec<(String, Duration)>) -> Result<(), QueueError> {
        self.hidden.lock().unwrap().extend(records);
        Ok(())
    }

    async fn continue_drain(&self, channel: &Channel, marker: u64) -> Result<(), QueueError> {
        if self.unavailable {
            return Err(QueueError::Unavailable("the stand-in queue is down".into()));
        }
        self.continued
            .lock()
            .unwrap()
            .push((channel.clone(), marker));
        Ok(())
    }
}
