use rockets::message::{Channel, Envelope, MessageNumber};

/// A store that counts the parked messages its loads hand back.
pub struct CountingStore<S> {
    pub inner: S,
    most_parked_read: std::sync::atomic::AtomicUsize,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            most_parked_read: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The most parked messages one load returned since the last call.
    pub fn take_most_parked_read(&self) -> usize {
        self.most_parked_read
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

impl<S: rockets::ports::ChannelStore> rockets::ports::ChannelStore for CountingStore<S> {
    async fn load(
        &self,
        channel: &Channel,
        window: usize,
        probe: &[MessageNumber],
    ) -> Result<Option<rockets::ports::ChannelSnapshot>, rockets::ports::StoreError> {
        let snapshot = self.inner.load(channel, window, probe).await?;
        if let Some(s) = &snapshot {
            let read = s.parked.first.len() + s.parked.probed.len();
            self.most_parked_read
                .fetch_max(read, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(snapshot)
    }

    async fn commit(
        &self,
        expected_version: u64,
        change: &rockets::ordering::ChannelChange,
    ) -> Result<rockets::ports::CommitOutcome, rockets::ports::StoreError> {
        self.inner.commit(expected_version, change).await
    }

    async fn applied(
        &self,
        channel: &Channel,
        numbers: &[MessageNumber],
    ) -> Result<Vec<Envelope>, rockets::ports::StoreError> {
        self.inner.applied(channel, numbers).await
    }
}
