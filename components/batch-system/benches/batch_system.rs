//! Send + handle throughput for 10,000 FSMs on 2 poller threads, side by side with two
//! baselines in the same run:
//! - `per_message_pool`: one crossbeam channel per FSM, and every send schedules a task on a
//!   2-thread pool that locks the FSM and handles one message (no batching, no dedup of
//!   wake-ups);
//! - `single_thread`: one channel for all FSMs drained by one thread that owns every FSM.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use batch_system::{create_system, Config, Fsm, HandlerBuilder, PollHandler, Router};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam::channel::{self, Receiver, Sender};

const FSMS: u64 = 10_000;
const MESSAGES: usize = 100_000;

struct CounterFsm {
    sum: u64,
}

impl Fsm for CounterFsm {
    type Message = u64;
}

struct Control;
impl Fsm for Control {
    type Message = ();
}

struct Handler(Arc<AtomicUsize>);

impl PollHandler<CounterFsm, Control> for Handler {
    fn handle_control(&mut self, _: &mut Control, _: &mut Vec<()>) {}

    fn handle_normal(&mut self, fsm: &mut CounterFsm, msgs: &mut Vec<u64>) {
        let n = msgs.len();
        fsm.sum += msgs.drain(..).sum::<u64>();
        self.0.fetch_add(n, Ordering::Release);
    }
}

struct Builder(Arc<AtomicUsize>);

impl HandlerBuilder<CounterFsm, Control> for Builder {
    type Handler = Handler;
    fn build(&mut self) -> Handler {
        Handler(self.0.clone())
    }
}

fn wait_for(counter: &AtomicUsize, target: usize) {
    while counter.load(Ordering::Acquire) < target {
        thread::yield_now();
    }
}

/// Sends `MESSAGES` round-robin over the FSMs, waiting for room when a mailbox is full.
/// Which FSM message `i` goes to: round-robin (`burst` 1) or `burst` messages in a row per FSM.
fn fsm_for(i: u64, burst: u64) -> u64 {
    1 + (i / burst) % FSMS
}

fn send_all(router: &Router<CounterFsm, Control>, burst: u64) {
    for i in 0..MESSAGES as u64 {
        let id = fsm_for(i, burst);
        // The common case is a plain try-send; wait for room only when the mailbox is full.
        if let Err(e) = router.send(id, i) {
            let mut msg = e.into_inner();
            while let Err(e) = router.send_timeout(id, msg, Duration::from_millis(10)) {
                msg = e.into_inner();
            }
        }
    }
}

fn bench_batch_system(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_and_handle_10k_fsms");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(20);

    for (name, burst) in [
        ("batch_system_2_pollers", 1u64),
        ("batch_system_2_pollers_burst10", 10),
    ] {
        group.bench_function(name, |b| {
            let handled = Arc::new(AtomicUsize::new(0));
            let config = Config::default();
            let (router, mut system) =
                create_system::<CounterFsm, Control>("bench", &config, Box::new(Control))
                    .expect("valid config");
            for id in 1..=FSMS {
                router.register(id, Box::new(CounterFsm { sum: 0 }));
            }
            system
                .spawn(&mut Builder(handled.clone()))
                .expect("spawn pollers");
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let goal = handled.load(Ordering::Acquire) + MESSAGES;
                    send_all(&router, burst);
                    wait_for(&handled, goal);
                }
                start.elapsed()
            });
            system.shutdown();
        });
    }

    for (name, burst) in [
        ("baseline_per_message_pool_2_threads", 1u64),
        ("baseline_per_message_pool_2_threads_burst10", 10),
    ] {
        group.bench_function(name, |b| {
            struct Slot {
                fsm: Mutex<CounterFsm>,
                sender: Sender<u64>,
                receiver: Receiver<u64>,
            }
            let slots: Arc<Vec<Slot>> = Arc::new(
                (0..=FSMS)
                    .map(|_| {
                        let (sender, receiver) =
                            channel::bounded(Config::default().mailbox_capacity);
                        Slot {
                            fsm: Mutex::new(CounterFsm { sum: 0 }),
                            sender,
                            receiver,
                        }
                    })
                    .collect(),
            );
            let handled = Arc::new(AtomicUsize::new(0));
            let (task_tx, task_rx) = channel::unbounded::<Option<u64>>();
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (slots, handled, task_rx) =
                        (slots.clone(), handled.clone(), task_rx.clone());
                    thread::spawn(move || {
                        while let Ok(Some(id)) = task_rx.recv() {
                            let slot = &slots[id as usize];
                            let mut fsm = slot.fsm.lock().unwrap_or_else(|e| e.into_inner());
                            if let Ok(msg) = slot.receiver.try_recv() {
                                fsm.sum += msg;
                                handled.fetch_add(1, Ordering::Release);
                            }
                        }
                    })
                })
                .collect();
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = handled.load(Ordering::Acquire) + MESSAGES;
                    for i in 0..MESSAGES as u64 {
                        let id = fsm_for(i, burst);
                        if slots[id as usize].sender.send(i).is_ok() {
                            let _ = task_tx.send(Some(id));
                        }
                    }
                    wait_for(&handled, target);
                }
                start.elapsed()
            });
            for _ in &workers {
                let _ = task_tx.send(None);
            }
            for w in workers {
                let _ = w.join();
            }
        });
    }

    group.bench_function("baseline_single_channel_1_thread", |b| {
        let handled = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel::unbounded::<Option<(u64, u64)>>();
        let worker = {
            let handled = handled.clone();
            thread::spawn(move || {
                let mut fsms: HashMap<u64, CounterFsm> =
                    (1..=FSMS).map(|id| (id, CounterFsm { sum: 0 })).collect();
                while let Ok(Some((id, msg))) = rx.recv() {
                    if let Some(fsm) = fsms.get_mut(&id) {
                        fsm.sum += msg;
                    }
                    handled.fetch_add(1, Ordering::Release);
                }
                black_box(fsms.len())
            })
        };
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let target = handled.load(Ordering::Acquire) + MESSAGES;
                for i in 0..MESSAGES as u64 {
                    let _ = tx.send(Some((1 + i % FSMS, i)));
                }
                wait_for(&handled, target);
            }
            start.elapsed()
        });
        let _ = tx.send(None);
        let _ = worker.join();
    });
    group.finish();
}

criterion_group!(benches, bench_batch_system);
criterion_main!(benches);
