//! Background tasks tied to the run that started them.

/// Stops a background task when dropped: when the run that spawned it ends, however it ends.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
