//! The client's end of TiKV's `BatchCommands`: one stream per store, shared by every request to
//! that store. Requests queued while a message is being sent go out together in the next one,
//! each with an id; answers are matched back by id. Under load this costs one HTTP/2 message
//! for many requests instead of an HTTP/2 stream each.
//!
//! A stream that fails fails every request sent on it with the stream's status (so the caller's
//! transport-failure handling applies: a request that may have been sent is not repeated
//! blindly). Requests still queued when it failed never left: they fail with a status saying
//! so, and are retried. The next request opens a new stream. A store that does not serve the
//! stream at all (UNIMPLEMENTED) is remembered, and its requests go as unary calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prost::Message as _;
use proto::tikvpb::batch_commands_request::request::Cmd as Command;
use proto::tikvpb::batch_commands_request::Request as CommandMsg;
use proto::tikvpb::batch_commands_response::response::Cmd as Answer;
use proto::tikvpb::tikv_client::TikvClient;
use proto::tikvpb::BatchCommandsRequest;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::Status;

/// Room kept below the message limit for a batch's framing.
const MESSAGE_HEADROOM: usize = 1 << 20;

type Reply = oneshot::Sender<Result<Answer, Status>>;

/// Message bounds: commands share a message up to `requests` of them and `shared` bytes; one
/// command alone may be up to `alone` (the client's message limit), and a bigger one is
/// refused before it is sent, as tonic refuses it on a unary call, rather than failing the
/// whole stream.
#[derive(Clone, Copy)]
struct Limits {
    requests: usize,
    shared: usize,
    alone: usize,
}

/// The stream's bounds, from [`crate::ClientConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamConfig {
    /// The client's message limit (`max_message_size`).
    pub(crate) max_message_size: usize,
    /// `batch_commands_max_requests`.
    pub(crate) max_requests: usize,
    /// `batch_commands_max_shared_bytes`.
    pub(crate) max_shared_bytes: usize,
    /// `batch_commands_queue_capacity`.
    pub(crate) queue_capacity: usize,
}

/// A handle on one store's stream. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BatchConn {
    tx: mpsc::Sender<(Command, Reply)>,
    queue_capacity: usize,
    /// The store answered UNIMPLEMENTED: it has no BatchCommands.
    unsupported: Arc<AtomicBool>,
}

impl BatchConn {
    /// A stream to the store behind `client`, opened with the first request. Shared messages
    /// are cut below `max_shared_bytes` and `max_message_size` (less the framing's room).
    pub(crate) fn open(client: TikvClient<Channel>, cfg: StreamConfig) -> BatchConn {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let unsupported = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            requests: cfg.max_requests.max(1),
            shared: cfg
                .max_message_size
                .saturating_sub(MESSAGE_HEADROOM)
                .clamp(1, cfg.max_shared_bytes.max(1)),
            alone: cfg.max_message_size,
        };
        tokio::spawn(run(client, rx, limits, unsupported.clone()));
        BatchConn {
            tx,
            queue_capacity: cfg.queue_capacity.max(1),
            unsupported,
        }
    }

    /// Requests waiting for the stream's task to take them.
    pub(crate) fn queued(&self) -> usize {
        self.queue_capacity.saturating_sub(self.tx.capacity())
    }

    /// Whether the stream has ended (a new one must be opened).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether the store does not serve BatchCommands (use unary calls).
    pub(crate) fn is_unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends one command and waits for its answer.
    pub(crate) async fn call(&self, command: Command) -> Result<Answer, Status> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send((command, reply)).await.is_err() {
            return Err(not_sent());
        }
        // Every reply the task takes is answered; one dropped unanswered means the task died
        // with the request possibly sent.
        answer.await.unwrap_or_else(|_| {
            Err(Status::unavailable(
                "the BatchCommands stream's task ended without an answer",
            ))
        })
    }
}

/// The status of a request that never left: its stream ended first.
fn not_sent() -> Status {
    let mut status =
        Status::unavailable("the BatchCommands stream ended before the request was sent");
    // What `net::never_sent` looks for: a request that never left may be sent again.
    status.set_source(Arc::new(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "BatchCommands stream closed",
    )));
    status
}

/// Moves the first queued command and those behind it into one message, up to the limits. Commands whose caller gave up (timed out) before they left are dropped.
fn take_batch(
    first: (Command, Reply),
    rx: &mut mpsc::Receiver<(Command, Reply)>,
    limits: Limits,
    next_id: &mut u64,
    waiting: &mut HashMap<u64, Reply>,
    held: &mut Option<(Command, Reply)>,
) -> BatchCommandsRequest {
    let mut msg = BatchCommandsRequest::default();
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some((command, reply)) = next.take() {
        let command = CommandMsg { cmd: Some(command) };
        let size = command.encoded_len() + 16;
        if size > limits.alone {
            let _ = reply.send(Err(Status::out_of_range(format!(
                "a request of {size} bytes is over the client's message limit of {} bytes",
                limits.alone
            ))));
        } else if !reply.is_closed() {
            if !msg.requests.is_empty() && bytes + size > limits.shared {
                // For the next message.
                *held = command.cmd.map(|c| (c, reply));
                break;
            }
            bytes += size;
            *next_id += 1;
            waiting.insert(*next_id, reply);
            msg.request_ids.push(*next_id);
            msg.requests.push(command);
        }
        if msg.requests.len() < limits.requests {
            next = rx.try_recv().ok();
        }
    }
    msg
}

fn fail_all(waiting: &mut HashMap<u64, Reply>, status: &Status) {
    for (_, reply) in waiting.drain() {
        let _ = reply.send(Err(status.clone()));
    }
}

/// The stream's task. When it ends, the requests it never took fail as never sent.
async fn run(
    client: TikvClient<Channel>,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    limits: Limits,
    unsupported: Arc<AtomicBool>,
) {
    let mut held = None;
    serve(client, &mut rx, limits, &unsupported, &mut held).await;
    rx.close();
    if let Some((_, reply)) = held {
        let _ = reply.send(Err(not_sent()));
    }
    // `recv`, not `try_recv`: it also waits out a sender that reserved room before the close.
    while let Some((_, reply)) = rx.recv().await {
        let _ = reply.send(Err(not_sent()));
    }
}

/// Sends queued commands and routes answers until the stream ends or nobody holds a handle.
async fn serve(
    mut client: TikvClient<Channel>,
    rx: &mut mpsc::Receiver<(Command, Reply)>,
    limits: Limits,
    unsupported: &AtomicBool,
    held: &mut Option<(Command, Reply)>,
) {
    let Some(first) = rx.recv().await else {
        return;
    };
    let mut waiting: HashMap<u64, Reply> = HashMap::new();
    let mut next_id = 0u64;
    // Unbounded so that sending never stops the task from reading answers (a store that
    // waits for its answers to be read before reading more would otherwise wait for us);
    // what it holds is bounded by the callers waiting, each for its own answer.
    let (out_tx, out_rx) = mpsc::unbounded_channel::<BatchCommandsRequest>();
    let outbound = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|msg| (msg, rx))
    });
    let msg = take_batch(first, rx, limits, &mut next_id, &mut waiting, held);
    if out_tx.send(msg).is_err() {
        return fail_all(&mut waiting, &not_sent());
    }
    let mut answers = match client.batch_commands(outbound).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            if status.code() == tonic::Code::Unimplemented {
                // Nothing was served: these go again, as unary calls.
                unsupported.store(true, Ordering::Relaxed);
                return fail_all(&mut waiting, &not_sent());
            }
            return fail_all(&mut waiting, &status);
        }
    };
    let mut out_tx = Some(out_tx);
    loop {
        let queued = async {
            match held.take() {
                Some(first) => Some(first),
                None => rx.recv().await,
            }
        };
        tokio::select! {
            queued = queued, if out_tx.is_some() => match queued {
                Some(first) => {
                    let msg = take_batch(first, rx, limits, &mut next_id, &mut waiting, held);
                    if msg.requests.is_empty() {
                        continue;
                    }
                    let unsent = match &out_tx {
                        Some(tx) => tx.send(msg).err().map(|e| e.0),
                        None => Some(msg),
                    };
                    if let Some(unsent) = unsent {
                        // That message never left; those before it may have.
                        for id in unsent.request_ids {
                            if let Some(reply) = waiting.remove(&id) {
                                let _ = reply.send(Err(not_sent()));
                            }
                        }
                        return fail_all(&mut waiting, &Status::unavailable(
                            "the BatchCommands stream's sending side closed",
                        ));
                    }
                }
                // Every handle is gone: close our side, and end once the answers are in.
                None => {
                    out_tx = None;
                    if waiting.is_empty() {
                        return;
                    }
                }
            },
            answer = answers.message() => match answer {
                Ok(Some(msg)) => {
                    for (id, answer) in msg.request_ids.into_iter().zip(msg.responses) {
                        if let Some(reply) = waiting.remove(&id) {
                            let _ = reply.send(answer.cmd.ok_or_else(|| {
                                Status::unimplemented(
                                    "the store does not serve this command over BatchCommands",
                                )
                            }));
                        }
                    }
                    if out_tx.is_none() && waiting.is_empty() {
                        return;
                    }
                }
                Ok(None) => {
                    return fail_all(&mut waiting, &Status::unavailable(
                        "the store ended the BatchCommands stream",
                    ));
                }
                Err(status) => return fail_all(&mut waiting, &status),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::kvrpcpb::RawPutRequest;

    fn put(value_len: usize) -> Command {
        Command::RawPut(RawPutRequest {
            key: b"k".to_vec(),
            value: vec![0; value_len],
            ..Default::default()
        })
    }

    /// Requests share a message up to the shared bound; one over the client's limit is refused
    /// alone, before anything is sent, and the others still go.
    #[test]
    fn a_batch_is_cut_by_size_and_an_oversized_request_is_refused_alone() {
        let limits = Limits {
            requests: 128,
            shared: 1000,
            alone: 5000,
        };
        let (tx, mut rx) = mpsc::channel(16);
        let mut answers = Vec::new();
        for len in [400, 400, 9000, 400] {
            let (reply, answer) = oneshot::channel();
            tx.try_send((put(len), reply)).unwrap();
            answers.push(answer);
        }
        let (mut next_id, mut waiting, mut held) = (0, HashMap::new(), None);
        let first = rx.try_recv().unwrap();
        let msg = take_batch(
            first,
            &mut rx,
            limits,
            &mut next_id,
            &mut waiting,
            &mut held,
        );
        assert_eq!(msg.requests.len(), 2, "two of 400 B fit 1000 B");
        let refused = answers[2].try_recv().expect("answered at once");
        assert_eq!(refused.unwrap_err().code(), tonic::Code::OutOfRange);
        // The last did not fit beside the first two: held for the next message.
        let first = held.take().expect("held");
        let msg = take_batch(
            first,
            &mut rx,
            limits,
            &mut next_id,
            &mut waiting,
            &mut held,
        );
        assert_eq!(msg.request_ids, [3]);
        assert_eq!(waiting.len(), 3);
    }
}
