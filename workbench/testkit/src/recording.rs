//! A stand-in queue for handlers under test: it keeps what it is sent and the visibility
//! changes it is asked for, and can be told to fail.

use std::sync::Mutex;
use std::time::Duration;

use rockets::message::Envelope;
use rockets::ports::{MessageQueue, QueueError, RecordVisibility};

#[derive(Default)]
pub struct RecordingQueue {
    sent: Mutex<Vec<Envelope>>,
    hidden: Mutex<Vec<(String, Duration)>>,
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

impl RecordVisibility for RecordingQueue {
    async fn hide(&self, records: Vec<(String, Duration)>) -> Result<(), QueueError> {
        self.hidden.lock().unwrap().extend(records);
        Ok(())
    }
}
