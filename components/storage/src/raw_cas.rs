//! Raw compare-and-swap on the region's leader, and what keeps a command's latches held past
//! a write of unknown outcome. Apart from gRPC and from any one runtime ([`Runtime`]), so the
//! server and the simulator run the same code.
//!
//! A compare-and-swap takes the key's latch (the one transactional commands and `for_cas`
//! writes take) → reads a linearizable snapshot → decides → proposes its write in the term
//! it read in (a leader change in between refuses it: nothing written) → releases the latch
//! once the write's outcome is settled ([`settle`]). Holding the latch until then is what
//! makes two compare-and-swaps of one key on this store never both act on one value.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::KvEngine;
use proto::kvrpcpb::Context;
use raftstore::{Modify, StoreApi};

use crate::latch::Latches;
use crate::metrics;

/// A task or timer future a [`Runtime`] runs.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the command layer needs from its runtime: time and background tasks. Tokio in the
/// server ([`TokioRuntime`]); virtual time and a task list in the simulator.
pub trait Runtime: Send + Sync + 'static {
    /// Monotonic time, on the clock `sleep` counts.
    fn now(&self) -> Instant;
    /// Ready once `d` has passed.
    fn sleep(&self, d: Duration) -> Task;
    /// Runs `task` to completion on its own.
    fn spawn(&self, task: Task);
}

/// The server's runtime: must be called from within Tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) -> Task {
        Box::pin(tokio::time::sleep(d))
    }

    fn spawn(&self, task: Task) {
        tokio::spawn(task);
    }
}

/// Runs `call` again while it answers ServerIsBusy (nothing proposed), pausing between tries,
/// for up to `wait` (`mailbox-full-wait-ms`) in all: a call through a waiting `StoreApi` may
/// itself have used all of it.
pub async fn busy_retry<T, F, Fut>(
    rt: &dyn Runtime,
    wait: Duration,
    mut call: F,
) -> raftstore::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = raftstore::Result<T>>,
{
    let (start, mut pause) = (rt.now(), Duration::from_millis(1));
    loop {
        match call().await {
            Err(raftstore::Error::ServerIsBusy { .. })
                if rt.now().saturating_duration_since(start) + pause < wait =>
            {
                rt.sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Holds `held` (latches, in-memory locks) after a write that failed with `error` until the
/// write can no longer apply. Only an `Undetermined` write may still apply: its entry is in
/// the log of this leader's term. It is settled once the region has applied past its index,
/// or once this store no longer leads in that term (a later leader here applies every
/// committed entry before it serves, and another store's leader has latches of its own).
/// Any other error releases `held` at once.
pub fn settle<EK: KvEngine, H: Send + 'static>(
    api: &StoreApi<EK>,
    rt: &Arc<dyn Runtime>,
    ctx: &Context,
    held: H,
    error: &raftstore::Error,
) {
    let raftstore::Error::Undetermined { index, term, .. } = *error else {
        return;
    };
    // A bug planted for the simulator to catch: the latches go with the answer.
    let plant_release_early = || {
        fail::fail_point!("plant_release_cas_latch_early", |_| true);
        false
    };
    if plant_release_early() {
        return;
    }
    let (api, timer, mut ctx) = (api.clone(), rt.clone(), ctx.clone());
    ctx.term = 0;
    metrics::METRICS.undetermined_latches.inc();
    rt.spawn(Box::pin(async move {
        let mut pause = Duration::from_millis(20);
        loop {
            timer.sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            match api.snapshot(&ctx).await {
                Ok(snap) if snap.term() != term || snap.applied_index() >= index => break,
                Ok(_) => {}
                // Not the leader, region gone, store stopping: no longer this term's.
                Err(e) if e.to_region_error().is_some() => break,
                Err(raftstore::Error::StoreStopped { .. }) => break,
                Err(_) => {}
            }
        }
        metrics::METRICS.undetermined_latches.dec();
        drop(held);
    }));
}

/// What a compare-and-swap found, and whether it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub swapped: bool,
    /// The value it compared (`None`: absent), as `decide` read it.
    pub current: Option<Vec<u8>>,
}

/// The store-side parts a compare-and-swap uses.
pub struct CasContext<'a, EK: KvEngine> {
    pub api: &'a StoreApi<EK>,
    pub latches: &'a Latches,
    pub runtime: &'a Arc<dyn Runtime>,
}

/// Compare-and-swap of `key` in `cf`. `decide` gets the stored value and returns the value
/// to compare and answer with (the stored one decoded: a TTL'd value may have expired) and,
/// if it matches, the value to store.
pub async fn compare_and_swap<EK, E>(
    on: CasContext<'_, EK>,
    ctx: &Context,
    cf: &str,
    key: Vec<u8>,
    decide: impl FnOnce(Option<&[u8]>) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), E>,
) -> Result<CasOutcome, E>
where
    EK: KvEngine,
    E: From<raftstore::Error>,
{
    let CasContext {
        api,
        latches,
        runtime,
    } = on;
    let latch = latches
        .acquire(std::iter::once((cf.to_string(), key.as_slice())))
        .await;
    let wait = api.mailbox_full_wait();
    let snap = busy_retry(runtime.as_ref(), wait, || api.snapshot(ctx)).await?;
    let stored = snap.get_cf(cf, &key)?;
    let (current, new) = decide(stored.as_deref())?;
    let Some(value) = new else {
        return Ok(CasOutcome {
            swapped: false,
            current,
        });
    };
    // Proposed only in the term it read in (StaleCommand otherwise, nothing written): a
    // leader in between could have changed the key without this store's latch.
    let mut ctx = ctx.clone();
    ctx.term = snap.term();
    let modifies = vec![Modify::Put {
        cf: cf.to_string(),
        key,
        value,
    }];
    if let Err(e) = busy_retry(runtime.as_ref(), wait, || api.write(&ctx, modifies.clone())).await {
        settle(api, runtime, &ctx, latch, &e);
        return Err(e.into());
    }
    Ok(CasOutcome {
        swapped: true,
        current,
    })
}

/// A write that takes the latches of the keys it puts or deletes (a `for_cas` write, as
/// TiKV's atomic mode sends every write to keys that see compare-and-swaps): ordered with
/// every compare-and-swap of those keys on this store, and held past an unknown outcome as
/// theirs are.
pub async fn latched_write<EK: KvEngine>(
    on: CasContext<'_, EK>,
    ctx: &Context,
    modifies: Vec<Modify>,
) -> raftstore::Result<()> {
    let CasContext {
        api,
        latches,
        runtime,
    } = on;
    let keys = modifies.iter().filter_map(|m| match m {
        Modify::Put { cf, key, .. } | Modify::Delete { cf, key } => {
            Some((cf.clone(), key.as_slice()))
        }
        Modify::DeleteRange { .. } => None,
    });
    let latch = latches.acquire(keys).await;
    let wait = api.mailbox_full_wait();
    if let Err(e) = busy_retry(runtime.as_ref(), wait, || api.write(ctx, modifies.clone())).await {
        settle(api, runtime, ctx, latch, &e);
        return Err(e);
    }
    Ok(())
}
