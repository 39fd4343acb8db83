//! The staging thread: reads experts into host memory ahead of use, off the request path — the
//! ones a prefetch hint pinned, and chosen hot-set members that are not resident yet. It is fed by
//! a bounded queue; when the queue is full the work is dropped, since a hint is advice and the
//! next choice of the hot set stages what is still missing.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use crate::residency::Residency;
use crate::shard::ShardKey;

/// Work for the staging thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Experts a prefetch hint named: pin them, choose the hot set again, read what it adds.
    Pin(Vec<ShardKey>),
    /// Chosen experts to read.
    Load(Vec<ShardKey>),
}

/// The handle to the staging thread; the thread ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Stager {
    queue: SyncSender<Stage>,
}

impl Stager {
    /// Starts the thread, with room for `capacity` pieces of work.
    pub fn spawn(residency: Arc<Residency>, capacity: usize) -> std::io::Result<Stager> {
        let (queue, work) = std::sync::mpsc::sync_channel::<Stage>(capacity);
        std::thread::Builder::new()
            .name("expert-staging".into())
            .spawn(move || {
                for stage in work {
                    let keys = match stage {
                        Stage::Pin(keys) => residency.pin(&keys),
                        Stage::Load(keys) => keys,
                    };
                    for key in keys {
                        if let Err(e) = residency.stage(key) {
                            tracing::warn!(error = %e, "staging an expert failed");
                        }
                    }
                }
            })?;
        Ok(Stager { queue })
    }

    /// Queues `stage` without waiting; false when the queue is full or the thread has stopped.
    pub fn send(&self, stage: Stage) -> bool {
        self.queue.try_send(stage).is_ok()
    }
}
