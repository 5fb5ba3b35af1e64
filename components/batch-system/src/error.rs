use std::fmt;

/// Failures of the batch system itself: bad configuration or a poller thread that could not be
/// started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("batch-system config field `{field}` must be greater than zero")]
    InvalidConfig { field: &'static str },
    #[error("failed to spawn poller thread {thread}: {source}")]
    Spawn {
        thread: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a message could not be delivered. Kept apart from [`Error`] because it hands the message
/// back, so the caller can answer its sender (for example with ServerIsBusy or RegionNotFound).
#[derive(thiserror::Error)]
pub enum SendError<M> {
    /// The mailbox holds `capacity` messages already.
    #[error("mailbox of fsm {addr} is full ({capacity} messages)")]
    Full { addr: u64, capacity: usize, msg: M },
    /// No FSM is registered under `addr`, or it has been closed.
    #[error("fsm {addr} is not found or has been closed")]
    Disconnected { addr: u64, msg: M },
    /// The batch system is shutting down and accepts no new messages.
    #[error("batch system is shutting down; message to fsm {addr} rejected")]
    ShuttingDown { addr: u64, msg: M },
}

impl<M> SendError<M> {
    /// Takes the undelivered message back.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full { msg, .. }
            | SendError::Disconnected { msg, .. }
            | SendError::ShuttingDown { msg, .. } => msg,
        }
    }

    /// The id of the FSM the message was meant for.
    pub fn addr(&self) -> u64 {
        match self {
            SendError::Full { addr, .. }
            | SendError::Disconnected { addr, .. }
            | SendError::ShuttingDown { addr, .. } => *addr,
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full { .. })
    }
}

// Messages need not be `Debug` (they carry callbacks), so the message is left out.
impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
