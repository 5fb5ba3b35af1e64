//! Behaviour of the batch system under concurrency: exactly-once delivery, per-sender order,
//! fairness, stop/close and shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use batch_system::{
    create_system, BatchSystem, Config, Fsm, HandlerBuilder, PollHandler, Router, SendError,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Counts kept by the test, outside the FSMs.
#[derive(Default)]
struct Shared {
    handled: AtomicUsize,
    order_violations: AtomicUsize,
    control_handled: AtomicUsize,
    dropped_fsms: AtomicUsize,
    handler_drops: AtomicUsize,
    /// (fsm id, handled count) recorded when each FSM is dropped.
    final_counts: Mutex<Vec<(u64, usize)>>,
    /// Messages the flood FSM had handled each time another FSM ran (fairness test).
    flood_seen_by_others: Mutex<Vec<usize>>,
    /// The batch size of every round.
    round_sizes: Mutex<Vec<usize>>,
}

enum Msg {
    /// (sender, sequence number)
    Seq(usize, u64),
    Stop,
}

struct TestFsm {
    id: u64,
    last_seq: Vec<Option<u64>>,
    handled: usize,
    stopped: bool,
    shared: Arc<Shared>,
}

impl TestFsm {
    fn boxed(id: u64, senders: usize, shared: &Arc<Shared>) -> Box<TestFsm> {
        Box::new(TestFsm {
            id,
            last_seq: vec![None; senders],
            handled: 0,
            stopped: false,
            shared: shared.clone(),
        })
    }
}

impl Fsm for TestFsm {
    type Message = Msg;
    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

impl Drop for TestFsm {
    fn drop(&mut self) {
        self.shared.dropped_fsms.fetch_add(1, Ordering::SeqCst);
        self.shared
            .final_counts
            .lock()
            .unwrap()
            .push((self.id, self.handled));
    }
}

struct Control;
impl Fsm for Control {
    type Message = ();
}

const FLOOD_FSM: u64 = 1;

struct Handler {
    shared: Arc<Shared>,
    flood_handled: Arc<AtomicUsize>,
}

impl PollHandler<TestFsm, Control> for Handler {
    fn begin(&mut self, batch_size: usize) {
        self.shared.round_sizes.lock().unwrap().push(batch_size);
    }

    fn handle_control(&mut self, _: &mut Control, msgs: &mut Vec<()>) {
        self.shared
            .control_handled
            .fetch_add(msgs.len(), Ordering::SeqCst);
    }

    fn handle_normal(&mut self, fsm: &mut TestFsm, msgs: &mut Vec<Msg>) {
        if fsm.id == FLOOD_FSM {
            self.flood_handled.fetch_add(msgs.len(), Ordering::SeqCst);
        } else if !msgs.is_empty() {
            let seen = self.flood_handled.load(Ordering::SeqCst);
            self.shared.flood_seen_by_others.lock().unwrap().push(seen);
        }
        for msg in msgs.drain(..) {
            match msg {
                Msg::Seq(sender, seq) => {
                    if fsm.last_seq[sender].is_some_and(|last| last >= seq) {
                        self.shared.order_violations.fetch_add(1, Ordering::SeqCst);
                    }
                    fsm.last_seq[sender] = Some(seq);
                    fsm.handled += 1;
                    self.shared.handled.fetch_add(1, Ordering::SeqCst);
                }
                Msg::Stop => fsm.stopped = true,
            }
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.shared.handler_drops.fetch_add(1, Ordering::SeqCst);
    }
}

struct Builder {
    shared: Arc<Shared>,
    flood_handled: Arc<AtomicUsize>,
}

impl HandlerBuilder<TestFsm, Control> for Builder {
    type Handler = Handler;
    fn build(&mut self) -> Handler {
        Handler {
            shared: self.shared.clone(),
            flood_handled: self.flood_handled.clone(),
        }
    }
}

type TestRouter = Router<TestFsm, Control>;
type TestSystem = BatchSystem<TestFsm, Control>;

fn new_system(config: &Config, fsms: u64, senders: usize) -> (TestRouter, TestSystem, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let (router, system) = create_system("test", config, Box::new(Control)).expect("valid config");
    for id in 1..=fsms {
        router.register(id, TestFsm::boxed(id, senders, &shared));
    }
    (router, system, shared)
}

fn spawn(system: &mut TestSystem, shared: &Arc<Shared>) {
    let mut builder = Builder {
        shared: shared.clone(),
        flood_handled: Arc::new(AtomicUsize::new(0)),
    };
    system.spawn(&mut builder).expect("spawn pollers");
}

/// Runs the system by hand (rounds only in `poll`).
fn start_manual(system: &mut TestSystem, shared: &Arc<Shared>) {
    let mut builder = Builder {
        shared: shared.clone(),
        flood_handled: Arc::new(AtomicUsize::new(0)),
    };
    system.start_manual(&mut builder);
}

/// Sends, waiting for room when the mailbox is full; any other error fails the test.
fn must_send(router: &TestRouter, id: u64, mut msg: Msg) {
    loop {
        match router.send_timeout(id, msg, Duration::from_millis(100)) {
            Ok(()) => return,
            Err(SendError::Full { msg: back, .. }) => msg = back,
            Err(e) => panic!("send to {id} failed: {e}"),
        }
    }
}

fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `senders` threads sending `per_sender` sequenced messages to random FSMs and checks that
/// every message is handled exactly once, in per-sender order, and that shutdown joins everything.
fn run_exactly_once(config: Config, fsms: u64, senders: usize, per_sender: usize, seed: u64) {
    let (router, mut system, shared) = new_system(&config, fsms, senders);
    spawn(&mut system, &shared);
    let threads: Vec<_> = (0..senders)
        .map(|sender| {
            let router = router.clone();
            thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + sender as u64);
                let mut sent = vec![0usize; fsms as usize + 1];
                for seq in 0..per_sender as u64 {
                    let id = rng.gen_range(1..=fsms);
                    must_send(&router, id, Msg::Seq(sender, seq));
                    sent[id as usize] += 1;
                }
                sent
            })
        })
        .collect();
    let mut expected = vec![0usize; fsms as usize + 1];
    for t in threads {
        for (id, n) in t.join().expect("sender thread").into_iter().enumerate() {
            expected[id] += n;
        }
    }
    let total = senders * per_sender;
    wait_until("all messages handled", Duration::from_secs(60), || {
        shared.handled.load(Ordering::SeqCst) >= total
    });
    assert_eq!(system.shutdown(), 0, "no poller panicked");
    assert_eq!(
        shared.handled.load(Ordering::SeqCst),
        total,
        "handled exactly once"
    );
    assert_eq!(shared.order_violations.load(Ordering::SeqCst), 0);
    assert_eq!(
        shared.handler_drops.load(Ordering::SeqCst),
        config.pool_size,
        "every poller thread ended"
    );
    assert_eq!(
        shared.dropped_fsms.load(Ordering::SeqCst),
        fsms as usize,
        "every fsm dropped at shutdown"
    );
    let mut counts = shared.final_counts.lock().unwrap().clone();
    counts.sort_unstable();
    for (id, handled) in counts {
        assert_eq!(
            handled, expected[id as usize],
            "fsm {id} handled what was sent to it"
        );
    }
}

#[test]
fn ten_thousand_fsms_exactly_once_in_order() {
    let config = Config {
        // Small mailboxes so senders hit Full and wait, exercising release/notify races.
        mailbox_capacity: 8,
        max_batch_size: 64,
        messages_per_tick: 4,
        ..Config::default()
    };
    run_exactly_once(config, 10_000, 4, 50_000, 7);
}

#[test]
fn flooded_fsm_does_not_starve_others() {
    let config = Config {
        pool_size: 1,
        max_batch_size: 1,
        messages_per_tick: 16,
        mailbox_capacity: 100_000,
        ..Config::default()
    };
    let others = 100;
    let (router, mut system, shared) = new_system(&config, others + 1, 1);
    for seq in 0..20_000 {
        must_send(&router, FLOOD_FSM, Msg::Seq(0, seq));
    }
    for id in 2..=others + 1 {
        must_send(&router, id, Msg::Seq(0, 0));
    }
    // Everything is queued before the poller starts, with the flood FSM first in line.
    spawn(&mut system, &shared);
    wait_until("all messages handled", Duration::from_secs(30), || {
        shared.handled.load(Ordering::SeqCst) >= 20_000 + others as usize
    });
    let seen = shared.flood_seen_by_others.lock().unwrap().clone();
    assert_eq!(seen.len(), others as usize);
    let worst = seen.iter().copied().max().unwrap_or_default();
    assert!(
        worst <= 2 * config.messages_per_tick,
        "others ran only after the flood FSM handled {worst} messages"
    );
    assert_eq!(system.shutdown(), 0);
}

#[test]
fn stopped_and_closed_fsms_reject_sends_and_are_dropped() {
    let (router, mut system, shared) = new_system(&Config::default(), 3, 1);
    spawn(&mut system, &shared);
    must_send(&router, 1, Msg::Seq(0, 0));
    must_send(&router, 1, Msg::Stop);
    wait_until("fsm 1 dropped", Duration::from_secs(10), || {
        shared.dropped_fsms.load(Ordering::SeqCst) == 1
    });
    assert!(matches!(
        router.send(1, Msg::Seq(0, 1)),
        Err(SendError::Disconnected { addr: 1, .. })
    ));
    assert_eq!(router.alive_count(), 2);

    assert!(router.close(2));
    wait_until("fsm 2 dropped", Duration::from_secs(10), || {
        shared.dropped_fsms.load(Ordering::SeqCst) == 2
    });
    assert!(matches!(
        router.send(2, Msg::Seq(0, 0)),
        Err(SendError::Disconnected { .. })
    ));
    assert!(!router.close(2), "closing twice reports nothing to close");
    assert!(matches!(
        router.send(99, Msg::Seq(0, 0)),
        Err(SendError::Disconnected { addr: 99, .. })
    ));
    assert_eq!(system.shutdown(), 0);
    assert_eq!(shared.dropped_fsms.load(Ordering::SeqCst), 3);
}

/// A sender waiting for room in a full mailbox goes on as soon as a poller drains it, and
/// gives up at once, with `Disconnected`, when the FSM is closed.
#[test]
fn a_waiting_sender_is_woken_by_a_drain_or_a_close() {
    let config = Config {
        mailbox_capacity: 1,
        ..Config::default()
    };
    let (router, mut system, shared) = new_system(&config, 2, 2);
    for id in [1, 2] {
        router.send(id, Msg::Seq(0, 0)).expect("room");
    }
    let waiter = |id: u64| {
        let router = router.clone();
        thread::spawn(move || {
            let start = Instant::now();
            let sent = router.send_timeout(id, Msg::Seq(1, 0), Duration::from_secs(20));
            (sent.map_err(|e| e.is_full()), start.elapsed())
        })
    };
    // Closed while its sender waits: Disconnected, long before the timeout.
    let closed = waiter(2);
    thread::sleep(Duration::from_millis(100));
    router.close(2);
    let (sent, waited) = closed.join().expect("waiter");
    assert_eq!(sent, Err(false), "a closed mailbox is not full, it is gone");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    // Drained while its sender waits: sent, long before the timeout.
    let drained = waiter(1);
    thread::sleep(Duration::from_millis(100));
    spawn(&mut system, &shared);
    let (sent, waited) = drained.join().expect("waiter");
    assert_eq!(sent, Ok(()));
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    system.shutdown();
}

#[test]
fn full_mailbox_is_a_clear_error() {
    let config = Config {
        mailbox_capacity: 2,
        ..Config::default()
    };
    // No pollers: nothing drains the mailbox.
    let (router, _system, _shared) = new_system(&config, 1, 1);
    router.send(1, Msg::Seq(0, 0)).expect("room");
    router.send(1, Msg::Seq(0, 1)).expect("room");
    let err = router.send(1, Msg::Seq(0, 2)).expect_err("full");
    assert!(err.is_full());
    assert_eq!(err.to_string(), "mailbox of fsm 1 is full (2 messages)");
    let start = Instant::now();
    let err = router
        .send_timeout(1, Msg::Seq(0, 2), Duration::from_millis(50))
        .expect_err("still full");
    assert!(err.is_full());
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "waited for room"
    );
    assert!(
        matches!(err.into_inner(), Msg::Seq(0, 2)),
        "the message is handed back"
    );
    // Messages between the system's own pollers are never refused for capacity.
    router
        .force_send(1, Msg::Seq(1, 0))
        .expect("forced past capacity");
    assert_eq!(router.mailbox(1).unwrap().len(), 3);
    assert!(
        router.force_send(99, Msg::Seq(1, 1)).is_err(),
        "unknown fsm"
    );
}

#[test]
fn control_and_broadcast() {
    let (router, mut system, shared) = new_system(&Config::default(), 50, 1);
    spawn(&mut system, &shared);
    for _ in 0..10 {
        router.send_control(()).expect("control send");
    }
    let mut seq = 0;
    let delivered = router.broadcast_normal(|| {
        seq += 1;
        Msg::Seq(0, seq)
    });
    assert_eq!(delivered, 50);
    wait_until(
        "control and broadcast handled",
        Duration::from_secs(10),
        || {
            shared.control_handled.load(Ordering::SeqCst) == 10
                && shared.handled.load(Ordering::SeqCst) == 50
        },
    );
    assert_eq!(system.shutdown(), 0);
}

#[test]
fn shutdown_drains_queued_work_then_rejects() {
    let config = Config {
        pool_size: 2,
        mailbox_capacity: 10_000,
        ..Config::default()
    };
    let (router, mut system, shared) = new_system(&config, 100, 1);
    for seq in 0..5_000u64 {
        must_send(&router, 1 + seq % 100, Msg::Seq(0, seq));
    }
    spawn(&mut system, &shared);
    assert_eq!(system.shutdown(), 0);
    assert_eq!(
        shared.handled.load(Ordering::SeqCst),
        5_000,
        "queued messages were drained"
    );
    assert_eq!(shared.handler_drops.load(Ordering::SeqCst), 2);
    assert_eq!(shared.dropped_fsms.load(Ordering::SeqCst), 100);
    assert!(matches!(
        router.send(1, Msg::Seq(0, 0)),
        Err(SendError::ShuttingDown { .. })
    ));
    assert!(matches!(
        router.send_control(()),
        Err(SendError::ShuttingDown { .. })
    ));
    // A second shutdown (and the one in Drop) is harmless.
    assert_eq!(system.shutdown(), 0);
}

#[test]
fn invalid_config_is_rejected() {
    let config = Config {
        max_batch_size: 0,
        ..Config::default()
    };
    let err = create_system::<TestFsm, Control>("test", &config, Box::new(Control))
        .err()
        .expect("invalid");
    assert_eq!(
        err.to_string(),
        "batch-system config field `max_batch_size` must be greater than zero"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Exactly-once and order hold for any small shape of system.
    #[test]
    fn exactly_once_for_any_shape(
        pool_size in 1usize..4,
        max_batch_size in 1usize..8,
        messages_per_tick in 1usize..8,
        mailbox_capacity in 1usize..16,
        fsms in 1u64..40,
        senders in 1usize..4,
        seed in any::<u64>(),
    ) {
        let config = Config { pool_size, max_batch_size, messages_per_tick, mailbox_capacity, ..Config::default() };
        run_exactly_once(config, fsms, senders, 500, seed);
    }
}

#[test]
fn router_send_after_fsm_replaced_reaches_new_fsm() {
    let (router, mut system, shared) = new_system(&Config::default(), 1, 1);
    spawn(&mut system, &shared);
    router.register(1, TestFsm::boxed(1, 1, &shared));
    wait_until("old fsm dropped", Duration::from_secs(10), || {
        shared.dropped_fsms.load(Ordering::SeqCst) == 1
    });
    must_send(&router, 1, Msg::Seq(0, 0));
    wait_until("handled by the new fsm", Duration::from_secs(10), || {
        shared.handled.load(Ordering::SeqCst) == 1
    });
    assert_eq!(router.alive_count(), 1);
    assert_eq!(system.shutdown(), 0);
}

/// Soak variant for `make test-long`: ten times the messages of the CI test, more senders.
#[test]
#[ignore = "soak test; run by make test-long"]
fn soak_exactly_once_in_order() {
    let config = Config {
        mailbox_capacity: 16,
        max_batch_size: 128,
        messages_per_tick: 8,
        ..Config::default()
    };
    run_exactly_once(config, 20_000, 8, 250_000, 11);
}

#[test]
fn a_system_run_by_hand_does_nothing_until_polled_then_everything_in_order() {
    let config = Config {
        messages_per_tick: 4,
        ..Config::default()
    };
    let (router, mut system, shared) = new_system(&config, 3, 1);
    start_manual(&mut system, &shared);
    for seq in 0..10 {
        for id in 1..=3 {
            must_send(&router, id, Msg::Seq(0, seq));
        }
    }
    router.send_control(()).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(shared.handled.load(Ordering::SeqCst), 0, "no thread polls");
    // 10 messages at 4 per round: 3 rounds, the FSMs staying in the batch.
    assert_eq!(system.poll(usize::MAX), 3);
    assert_eq!(shared.handled.load(Ordering::SeqCst), 30);
    assert_eq!(shared.control_handled.load(Ordering::SeqCst), 1);
    assert_eq!(shared.order_violations.load(Ordering::SeqCst), 0);
    assert_eq!(system.poll(usize::MAX), 0, "nothing left");
    must_send(&router, 2, Msg::Seq(0, 10));
    assert_eq!(system.poll(1), 1);
    must_send(&router, 1, Msg::Stop);
    system.poll(usize::MAX);
    assert!(
        router.send(1, Msg::Seq(0, 11)).is_err(),
        "stopped fsm is gone"
    );
    assert_eq!(system.shutdown(), 0);
    assert_eq!(shared.dropped_fsms.load(Ordering::SeqCst), 3);
    assert_eq!(shared.handler_drops.load(Ordering::SeqCst), 1);
}

/// The control FSM (the store's ticks and liveness) is not queued behind thousands of notified
/// FSMs (a failover wakes them all at once): a poller takes it first.
#[test]
fn the_control_fsm_goes_before_queued_normal_fsms() {
    let config = Config {
        max_batch_size: 2,
        ..Config::default()
    };
    let (router, mut system, shared) = new_system(&config, 10, 1);
    start_manual(&mut system, &shared);
    for id in 1..=10 {
        must_send(&router, id, Msg::Seq(0, 0));
    }
    router.send_control(()).unwrap();
    assert_eq!(system.poll(1), 1);
    assert_eq!(
        shared.control_handled.load(Ordering::SeqCst),
        1,
        "the control FSM waited behind the normal ones"
    );
    assert_eq!(shared.handled.load(Ordering::SeqCst), 1);
    system.poll(usize::MAX);
    assert_eq!(shared.handled.load(Ordering::SeqCst), 10);
    assert_eq!(system.shutdown(), 0);
}

/// Messages sent as a group wake their FSMs as one unit: one poller takes them all into one
/// round (up to its batch size; the rest is queued again), however many pollers are waiting.
#[test]
fn a_group_send_wakes_its_fsms_into_one_round() {
    let config = Config {
        pool_size: 2,
        ..Config::default()
    };
    let (router, mut system, shared) = new_system(&config, 64, 1);
    spawn(&mut system, &shared);
    for round in 0..20u64 {
        let before = shared.handled.load(Ordering::SeqCst);
        let refused = router.send_group((1..=64).map(|id| (id, Msg::Seq(0, round))));
        assert!(refused.is_empty());
        wait_until("the group handled", Duration::from_secs(10), || {
            shared.handled.load(Ordering::SeqCst) == before + 64
        });
        let sizes = std::mem::take(&mut *shared.round_sizes.lock().unwrap());
        assert_eq!(
            sizes.iter().filter(|n| **n > 0).collect::<Vec<_>>(),
            [&64],
            "round {round}: all 64 in one round"
        );
    }
    assert_eq!(shared.order_violations.load(Ordering::SeqCst), 0);
    assert_eq!(system.shutdown(), 0);
}

#[test]
fn a_group_larger_than_a_batch_is_split_and_refusals_are_returned() {
    let config = Config {
        max_batch_size: 4,
        mailbox_capacity: 1,
        ..Config::default()
    };
    let (router, mut system, shared) = new_system(&config, 10, 1);
    start_manual(&mut system, &shared);
    let msgs = (1..=10)
        .map(|id| (id, Msg::Seq(0, 0)))
        .chain([(99, Msg::Seq(0, 0)), (3, Msg::Seq(0, 1))]);
    let refused = router.send_group(msgs);
    assert_eq!(refused.len(), 2, "an unknown FSM and a full mailbox");
    assert!(matches!(
        refused[0],
        SendError::Disconnected { addr: 99, .. }
    ));
    assert!(matches!(refused[1], SendError::Full { addr: 3, .. }));
    assert_eq!(system.poll(1), 1);
    assert_eq!(shared.handled.load(Ordering::SeqCst), 4, "a batch's worth");
    assert_eq!(system.poll(usize::MAX), 2);
    assert_eq!(shared.handled.load(Ordering::SeqCst), 10);
    assert_eq!(system.shutdown(), 0);
}
