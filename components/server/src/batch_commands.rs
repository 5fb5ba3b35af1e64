//! TiKV's `BatchCommands`: one long-lived stream per client connection carrying many commands,
//! each tagged with an id its answer is matched by. A unary call costs an HTTP/2 stream (its
//! headers, its flow-control updates, its wake-ups) per command; here a message carries many
//! commands and the answers that are ready at the same time share a message back.
//!
//! Each command runs as its own task through the same handler as its unary method (so the
//! same checks, errors and metrics), concurrently with the others: commands to one region that
//! arrive together reach the raft round together and share a raft entry.
//!
//! Bounds: `batch-commands-max-in-flight` commands per stream run at once (the stream is not
//! read further until one's answer is sent, so HTTP/2 flow control holds the client back), and
//! an answer message holds at most `batch-commands-max-responses` answers and stays under
//! 4 MiB (what TiKV clients decode by default) and 1 MiB below `grpc-max-message-size`; an
//! answer bigger than that on its own goes alone, as its unary call would. Many slow commands
//! (lock waits, reads of a region without a leader) can hold all the permits: the stream's
//! other commands then wait behind them, as TiKV's do.
//!
//! One command's failure never ends the stream (the others on it are unrelated requests): a
//! command its unary method would answer with a gRPC status gets that status in its answer's
//! `region_error` instead, as `server_is_busy` when the store cannot answer now (UNAVAILABLE:
//! stopping, a read timed out, a write's outcome unknown; the client backs off and retries,
//! and these commands are idempotent) and otherwise as the error's `message` (invalid input,
//! an answer too large), which a client reports. A command regionstore does not serve
//! (coprocessor, GC, ...) decodes here with no command and is answered with no command.
//! Only a batch that is malformed as a whole (ids and commands that do not pair up, a message
//! that does not decode) ends the stream, with INVALID_ARGUMENT or the decoding status, once
//! the commands already started have answered (they may have written).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use engine::KvEngine;
use futures::Stream;
use prost::Message as _;
use proto::tikvpb::batch_commands_request::request::Cmd as Command;
use proto::tikvpb::batch_commands_response::response::Cmd as Answer;
use proto::tikvpb::batch_commands_response::Response as AnswerMsg;
use proto::tikvpb::tikv_server::Tikv;
use proto::tikvpb::{BatchCommandsEmptyResponse, BatchCommandsRequest, BatchCommandsResponse};
use proto::{errorpb, kvrpcpb};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Status, Streaming};

use crate::kv::KvService;
use crate::metrics::METRICS;

/// The answer stream of one `BatchCommands` call.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<BatchCommandsResponse, Status>> + Send>>;

/// Answers share a message only below this size: what TiKV clients decode by default (4 MiB)
/// less room for framing. An answer bigger on its own goes alone, as its unary call would.
const SHARED_MESSAGE_BYTES: usize = (4 << 20) - (64 << 10);

/// Room kept below the gRPC message limit for an answer message's framing.
const MESSAGE_HEADROOM: usize = 1 << 20;

/// Longest delay a test's empty command may ask for.
const MAX_EMPTY_DELAY: Duration = Duration::from_secs(10);

/// A command's id and answer, with its in-flight permit: given back only once the answer is
/// in a message, so answers a client does not read hold the stream's reading back too.
type Outcome = (u64, Result<Option<Answer>, Status>, Option<InFlight>);

/// One command's place among the stream's in-flight ones, counted in the metric.
struct InFlight {
    _permit: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.batch_commands_in_flight.dec();
    }
}

/// Serves one stream: commands are read and started on a task of their own, answers are sent
/// back in the order they finish.
pub fn serve<EK: KvEngine>(
    service: KvService<EK>,
    commands: Streaming<BatchCommandsRequest>,
) -> AnswerStream {
    let cfg = service.config();
    let (max_answers, max_bytes) = (
        cfg.batch_commands_max_responses,
        cfg.grpc_max_message_size
            .saturating_sub(MESSAGE_HEADROOM)
            .clamp(1, SHARED_MESSAGE_BYTES),
    );
    // Validated to at most 65,536.
    let max_in_flight = u32::try_from(cfg.batch_commands_max_in_flight).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max_in_flight as usize));
    let (tx, rx) = mpsc::unbounded_channel::<Outcome>();
    tokio::spawn(read_commands(service, commands, permits, max_in_flight, tx));
    METRICS.batch_commands_streams.inc();
    let state = AnswerState {
        rx,
        pending: None,
        failure: None,
        ended: false,
        _open: OpenStream,
    };
    Box::pin(futures::stream::unfold(
        state,
        move |mut state| async move {
            let next = state.next_message(max_answers, max_bytes).await?;
            Some((next, state))
        },
    ))
}

/// Counts the stream open until its answer side is dropped.
struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        METRICS.batch_commands_streams.dec();
    }
}

/// Reads the client's messages and starts each command, while permits last.
async fn read_commands<EK: KvEngine>(
    service: KvService<EK>,
    mut commands: Streaming<BatchCommandsRequest>,
    permits: Arc<Semaphore>,
    max_in_flight: u32,
    tx: mpsc::UnboundedSender<Outcome>,
) {
    loop {
        let batch = match commands.message().await {
            Ok(Some(batch)) => batch,
            // The client closed its side: the commands already started still answer.
            Ok(None) => return,
            // A message that does not decode, or a broken connection: the stream ends with
            // the status after the answers already under way.
            Err(status) => return fail_after_answers(&permits, max_in_flight, &tx, status).await,
        };
        if batch.requests.len() != batch.request_ids.len() {
            let status = Status::invalid_argument(format!(
                "BatchCommands: {} requests but {} request ids",
                batch.requests.len(),
                batch.request_ids.len()
            ));
            return fail_after_answers(&permits, max_in_flight, &tx, status).await;
        }
        for (id, request) in batch.request_ids.into_iter().zip(batch.requests) {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            if tx.is_closed() {
                // Nobody reads the answers any more.
                return;
            }
            let (service, tx) = (service.clone(), tx.clone());
            METRICS.batch_commands_in_flight.inc();
            let permit = InFlight { _permit: permit };
            tokio::spawn(async move {
                let answer = run(&service, request.cmd).await;
                let _ = tx.send((id, Ok(answer), Some(permit)));
            });
        }
    }
}

/// Ends the stream with `status` once every command already started has its answer in a
/// message (its permit back): those may have written, and their callers must hear so.
async fn fail_after_answers(
    permits: &Semaphore,
    max_in_flight: u32,
    tx: &mpsc::UnboundedSender<Outcome>,
    status: Status,
) {
    let _all = permits.acquire_many(max_in_flight).await;
    let _ = tx.send((0, Err(status), None));
}

/// Runs one command through its unary method's handler; `None` for a command not served.
async fn run<EK: KvEngine>(service: &KvService<EK>, command: Option<Command>) -> Option<Answer> {
    macro_rules! unary {
        ($method:ident, $req:expr, $answer:ident, $resp:ident) => {
            Answer::$answer(match service.$method(Request::new($req)).await {
                Ok(resp) => resp.into_inner(),
                Err(status) => kvrpcpb::$resp {
                    region_error: Some(status_error(status)),
                    ..Default::default()
                },
            })
        };
    }
    Some(match command? {
        Command::Get(r) => unary!(kv_get, r, Get, GetResponse),
        Command::Scan(r) => unary!(kv_scan, r, Scan, ScanResponse),
        Command::Prewrite(r) => unary!(kv_prewrite, r, Prewrite, PrewriteResponse),
        Command::Commit(r) => unary!(kv_commit, r, Commit, CommitResponse),
        Command::Cleanup(r) => unary!(kv_cleanup, r, Cleanup, CleanupResponse),
        Command::BatchGet(r) => unary!(kv_batch_get, r, BatchGet, BatchGetResponse),
        Command::BatchRollback(r) => {
            unary!(kv_batch_rollback, r, BatchRollback, BatchRollbackResponse)
        }
        Command::ScanLock(r) => unary!(kv_scan_lock, r, ScanLock, ScanLockResponse),
        Command::ResolveLock(r) => unary!(kv_resolve_lock, r, ResolveLock, ResolveLockResponse),
        Command::DeleteRange(r) => unary!(kv_delete_range, r, DeleteRange, DeleteRangeResponse),
        Command::RawGet(r) => unary!(raw_get, r, RawGet, RawGetResponse),
        Command::RawBatchGet(r) => unary!(raw_batch_get, r, RawBatchGet, RawBatchGetResponse),
        Command::RawPut(r) => unary!(raw_put, r, RawPut, RawPutResponse),
        Command::RawBatchPut(r) => unary!(raw_batch_put, r, RawBatchPut, RawBatchPutResponse),
        Command::RawDelete(r) => unary!(raw_delete, r, RawDelete, RawDeleteResponse),
        Command::RawBatchDelete(r) => {
            unary!(raw_batch_delete, r, RawBatchDelete, RawBatchDeleteResponse)
        }
        Command::RawScan(r) => unary!(raw_scan, r, RawScan, RawScanResponse),
        Command::RawDeleteRange(r) => {
            unary!(raw_delete_range, r, RawDeleteRange, RawDeleteRangeResponse)
        }
        Command::RawBatchScan(r) => unary!(raw_batch_scan, r, RawBatchScan, RawBatchScanResponse),
        Command::PessimisticLock(r) => {
            unary!(
                kv_pessimistic_lock,
                r,
                PessimisticLock,
                PessimisticLockResponse
            )
        }
        Command::PessimisticRollback(r) => unary!(
            kv_pessimistic_rollback,
            r,
            PessimisticRollback,
            PessimisticRollbackResponse
        ),
        Command::CheckTxnStatus(r) => {
            unary!(
                kv_check_txn_status,
                r,
                CheckTxnStatus,
                CheckTxnStatusResponse
            )
        }
        Command::TxnHeartBeat(r) => {
            unary!(kv_txn_heart_beat, r, TxnHeartBeat, TxnHeartBeatResponse)
        }
        Command::CheckSecondaryLocks(r) => unary!(
            kv_check_secondary_locks,
            r,
            CheckSecondaryLocks,
            CheckSecondaryLocksResponse
        ),
        Command::Empty(r) => {
            let delay = Duration::from_millis(r.delay_time).min(MAX_EMPTY_DELAY);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Answer::Empty(BatchCommandsEmptyResponse { test_id: r.test_id })
        }
    })
}

/// A command's gRPC status as its answer's region error (see the module doc).
fn status_error(status: Status) -> errorpb::Error {
    let message = format!("{:?}: {}", status.code(), status.message());
    let server_is_busy =
        (status.code() == tonic::Code::Unavailable).then(|| errorpb::ServerIsBusy {
            reason: status.message().to_owned(),
            ..Default::default()
        });
    errorpb::Error {
        message,
        server_is_busy,
        ..Default::default()
    }
}

struct AnswerState {
    rx: mpsc::UnboundedReceiver<Outcome>,
    /// An answer that did not fit the previous message.
    pending: Option<(u64, AnswerMsg)>,
    /// A status that ends the stream once the answers before it are sent.
    failure: Option<Status>,
    ended: bool,
    _open: OpenStream,
}

impl AnswerState {
    /// The next message: waits for one answer, then takes those already finished, within the
    /// bounds. `None` once every command has answered and the client closed its side, or
    /// after a status ended the stream.
    async fn next_message(
        &mut self,
        max_answers: usize,
        max_bytes: usize,
    ) -> Option<Result<BatchCommandsResponse, Status>> {
        if self.ended {
            return None;
        }
        if let Some(status) = self.failure.take() {
            return Some(self.end(status));
        }
        let mut msg = BatchCommandsResponse::default();
        let mut bytes = 0;
        if let Some((id, answer)) = self.pending.take() {
            bytes += answer.encoded_len();
            msg.request_ids.push(id);
            msg.responses.push(answer);
        } else {
            match self.rx.recv().await? {
                (_, Err(status), _) => return Some(self.end(status)),
                (id, Ok(answer), _permit) => {
                    let answer = AnswerMsg { cmd: answer };
                    bytes += answer.encoded_len();
                    msg.request_ids.push(id);
                    msg.responses.push(answer);
                }
            }
        }
        while msg.responses.len() < max_answers {
            let Ok((id, outcome, _permit)) = self.rx.try_recv() else {
                break;
            };
            let answer = match outcome {
                Ok(answer) => AnswerMsg { cmd: answer },
                // Send what is ready first; the status ends the stream after it.
                Err(status) => {
                    self.failure = Some(status);
                    break;
                }
            };
            let size = answer.encoded_len();
            if bytes + size > max_bytes {
                self.pending = Some((id, answer));
                break;
            }
            bytes += size;
            msg.request_ids.push(id);
            msg.responses.push(answer);
        }
        METRICS
            .batch_commands_responses
            .observe(msg.responses.len() as f64);
        Some(Ok(msg))
    }

    fn end(&mut self, status: Status) -> Result<BatchCommandsResponse, Status> {
        self.ended = true;
        Err(status)
    }
}
