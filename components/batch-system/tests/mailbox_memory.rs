//! What an idle FSM's mailbox costs in memory: the same whatever its capacity, and the same
//! again after a burst of messages has been handled. Its own test binary, because it counts
//! every allocation of the process with a global allocator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_system::{create_system, Config, Fsm, HandlerBuilder, PollHandler, Router};
use util::heap::live_bytes as live;

#[global_allocator]
static ALLOC: util::heap::CountingAlloc = util::heap::CountingAlloc;

/// A message about the size of a raft store's (a few hundred bytes inline).
struct Msg(#[allow(dead_code)] [u64; 32]);

struct Region;
impl Fsm for Region {
    type Message = Msg;
}

struct Control;
impl Fsm for Control {
    type Message = ();
}

struct Handler(Arc<AtomicUsize>);

impl PollHandler<Region, Control> for Handler {
    fn handle_control(&mut self, _: &mut Control, _: &mut Vec<()>) {}

    fn handle_normal(&mut self, _: &mut Region, msgs: &mut Vec<Msg>) {
        self.0.fetch_add(msgs.len(), Ordering::SeqCst);
        msgs.clear();
    }
}

struct Builder(Arc<AtomicUsize>);

impl HandlerBuilder<Region, Control> for Builder {
    type Handler = Handler;
    fn build(&mut self) -> Handler {
        Handler(self.0.clone())
    }
}

const FSMS: u64 = 2_000;

/// Bytes per FSM that registering `FSMS` of them with `capacity` costs.
fn per_fsm(router: &Router<Region, Control>, first: u64) -> isize {
    let before = live();
    for id in first..first + FSMS {
        router.register(id, Box::new(Region));
    }
    (live() - before) / FSMS as isize
}

#[test]
fn an_idle_mailbox_costs_the_same_whatever_its_capacity_and_after_a_burst() {
    let mut costs = Vec::new();
    for capacity in [16, 4096, 65_536] {
        let config = Config {
            mailbox_capacity: capacity,
            pool_size: 1,
            ..Config::default()
        };
        let (router, mut system) =
            create_system::<Region, Control>("memory", &config, Box::new(Control)).expect("system");
        // Registered before the poller starts: its thread's own first allocations must not
        // land inside the count.
        let cost = per_fsm(&router, 1);
        let handled = Arc::new(AtomicUsize::new(0));
        system
            .spawn(&mut Builder(handled.clone()))
            .expect("spawn the poller");
        // Bursts to every FSM, handled: the queues grow, then give their buffers back. The
        // first burst also grows the poller's own round buffers once; the second must leave
        // nothing behind.
        let burst = 16;
        let mut after = 0;
        for round in 0..2 {
            let idle = live();
            for id in 1..=FSMS {
                for _ in 0..burst {
                    router.send(id, Msg([id; 32])).expect("room in the mailbox");
                }
            }
            let want = (FSMS * burst) as usize * (round + 1);
            let deadline = Instant::now() + Duration::from_secs(30);
            while handled.load(Ordering::SeqCst) < want {
                assert!(
                    Instant::now() < deadline,
                    "the burst was not handled in 30 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            // The poller parks each FSM (freeing its queues) just after handling it.
            std::thread::sleep(Duration::from_millis(50));
            after = (live() - idle) / FSMS as isize;
        }
        eprintln!("capacity {capacity}: {cost} bytes per idle FSM, {after} more after a burst");
        assert!(
            after <= 0,
            "capacity {capacity}: {after} bytes per FSM kept after a burst"
        );
        costs.push(cost);
        system.shutdown();
    }
    // Mailbox, FSM box and router entry: a few hundred bytes, not capacity × message size.
    assert!(
        costs.iter().all(|&c| (c - costs[0]).abs() <= 16 && c < 512),
        "bytes per idle FSM by capacity 16, 4096, 65536: {costs:?}"
    );
}
