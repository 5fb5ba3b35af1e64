//! Linearizable reads: the leader lease (its own clock, since raft-rs has none) and the
//! queue of ReadIndex requests waiting for confirmation and for the apply to catch up.
//!
//! A leader may read locally while its lease holds and it has applied an entry of its own term
//! (so every write acknowledged by an earlier leader is applied here). The lease is renewed
//! from the *send* time of messages a quorum acknowledged: a proposal's propose time once it
//! commits, a ReadIndex request's issue time once it is confirmed. It is shorter than the
//! election timeout, and followers with check-quorum ignore votes while they hear from a
//! leader, so no other leader can serve writes before it expires.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::KvEngine;
use proto::raft_cmdpb::RaftCmdRequest;

use crate::operation::write;
use crate::raft::Peer;
use crate::router::{ReadCallback, RegionSnapshot};
use crate::Error;

#[derive(Debug)]
pub struct Lease {
    max: Duration,
    expires: Option<Instant>,
}

impl Lease {
    pub fn new(max: Duration) -> Lease {
        Lease { max, expires: None }
    }

    /// A quorum acknowledged something sent at `sent`.
    pub fn renew(&mut self, sent: Instant) {
        let expires = sent + self.max;
        if self.expires.is_none_or(|current| expires > current) {
            self.expires = Some(expires);
        }
    }

    pub fn expire(&mut self) {
        self.expires = None;
    }

    pub fn is_valid(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now < e)
    }

    /// True when the lease is gone or ends within a third of its length: time to confirm
    /// leadership again before reads fall back to ReadIndex.
    pub fn needs_renewal(&self, now: Instant) -> bool {
        self.expires
            .is_none_or(|e| e.saturating_duration_since(now) < self.max / 3)
    }
}

/// A read waiting for a ReadIndex round: its request's header is checked again when it is
/// served, as a split applied meanwhile changes the range its snapshot covers.
#[derive(Debug)]
pub struct ReadWaiter<S> {
    pub request: RaftCmdRequest,
    pub cb: ReadCallback<S>,
}

/// One ReadIndex request and the reads waiting on it. The id travels as the request context.
#[derive(Debug)]
pub struct PendingRead<C> {
    pub id: u64,
    pub issued: Instant,
    pub last_sent: Instant,
    /// Set once the leader confirmed it: serve when applied >= this.
    pub read_index: Option<u64>,
    pub waiters: Vec<C>,
}

/// ReadIndex requests in issue order.
#[derive(Debug)]
pub struct PendingReads<C> {
    next_id: u64,
    queue: VecDeque<PendingRead<C>>,
}

impl<C> Default for PendingReads<C> {
    fn default() -> Self {
        PendingReads {
            next_id: 1,
            queue: VecDeque::new(),
        }
    }
}

impl<C> PendingReads<C> {
    pub fn len(&self) -> usize {
        self.queue.iter().map(|r| r.waiters.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Adds `waiter` to the newest unconfirmed request if it was issued at or after `min_issue`
    /// (so one quorum round serves many reads), or starts a new request. Returns the id of a
    /// new request that must be sent.
    pub fn push(&mut self, waiter: C, now: Instant) -> Option<u64> {
        if let Some(last) = self.queue.back_mut() {
            // Joining a request already sent would let the read be confirmed by heartbeats
            // sent before it arrived; only the just-created one of this round may be shared.
            if last.read_index.is_none() && last.issued == now {
                last.waiters.push(waiter);
                return None;
            }
        }
        let id = self.start(now);
        if let Some(read) = self.queue.back_mut() {
            read.waiters.push(waiter);
        }
        Some(id)
    }

    /// Starts a request with no waiters (to renew the lease). Returns its id.
    pub fn start(&mut self, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(PendingRead {
            id,
            issued: now,
            last_sent: now,
            read_index: None,
            waiters: Vec::new(),
        });
        id
    }

    /// The leader confirmed request `id` at `index`. Returns its issue time (for the lease).
    pub fn confirm(&mut self, id: u64, index: u64) -> Option<Instant> {
        let read = self.queue.iter_mut().find(|r| r.id == id)?;
        if read.read_index.is_none() {
            read.read_index = Some(index);
        }
        Some(read.issued)
    }

    /// Removes, in order, the confirmed requests whose index is applied.
    pub fn take_ready(&mut self, applied: u64) -> Vec<PendingRead<C>> {
        let mut ready = Vec::new();
        while self
            .queue
            .front()
            .is_some_and(|r| r.read_index.is_some_and(|i| i <= applied))
        {
            ready.extend(self.queue.pop_front());
        }
        // A later request can be confirmed before an earlier one that was dropped and resent.
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].read_index.is_some_and(|idx| idx <= applied) {
                ready.extend(self.queue.remove(i));
            } else {
                i += 1;
            }
        }
        ready
    }

    /// Unconfirmed requests last sent before `before`: raft-rs drops a ReadIndex until the
    /// leader commits an entry of its term, so they are sent again.
    pub fn to_resend(&mut self, before: Instant, now: Instant) -> Vec<u64> {
        self.queue
            .iter_mut()
            .filter(|r| r.read_index.is_none() && r.last_sent < before)
            .map(|r| {
                r.last_sent = now;
                r.id
            })
            .collect()
    }

    /// Removes requests issued before `deadline`.
    pub fn take_expired(&mut self, deadline: Instant) -> Vec<PendingRead<C>> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for read in self.queue.drain(..) {
            if read.issued < deadline {
                expired.push(read);
            } else {
                kept.push_back(read);
            }
        }
        self.queue = kept;
        expired
    }

    pub fn take_all(&mut self) -> Vec<PendingRead<C>> {
        self.queue.drain(..).collect()
    }
}

impl<EK: KvEngine> Peer<EK> {
    /// The reads' part of a tick: times out reads that waited too long, asks raft-rs again
    /// for ReadIndex rounds it dropped, and renews the lease ahead of expiry while the region
    /// is being read. Returns true if raft has something to do.
    pub(crate) fn tick_reads(&mut self, now: Instant) -> bool {
        let mut work = false;
        for read in self.pending_reads.take_expired(
            now.checked_sub(self.limits.read_index_timeout)
                .unwrap_or(now),
        ) {
            for ReadWaiter { cb, .. } in read.waiters {
                let err = Error::ReadTimeout {
                    region_id: self.region_id(),
                    waited_ms: self.limits.read_index_timeout.as_millis() as u64,
                    reason: "leadership could not be confirmed by a quorum".into(),
                };
                self.reply_read(cb, Err(err));
            }
        }
        if self.is_leader() {
            // raft-rs drops a ReadIndex until this term has a committed entry: ask again.
            let before = now.checked_sub(self.limits.base_tick).unwrap_or(now);
            for id in self.pending_reads.to_resend(before, now) {
                self.raw.read_index(id.to_be_bytes().to_vec());
                work = true;
            }
            // Renew the lease ahead of expiry for regions that are being read.
            let reading = self
                .last_read
                .is_some_and(|t| now.saturating_duration_since(t) < self.limits.read_index_timeout);
            let transferring = self.raw.raft.lead_transferee.is_some();
            if reading
                && !transferring
                && self.pending_reads.is_empty()
                && self.lease.needs_renewal(now)
            {
                let id = self.pending_reads.start(now);
                self.raw.read_index(id.to_be_bytes().to_vec());
                work = true;
            }
        }
        work
    }

    /// A linearizable read: served at once under a valid lease, otherwise after a ReadIndex
    /// round confirms leadership and the apply reaches the confirmed index. `now` is the
    /// round's time, shared by every read of the round so they share one ReadIndex request;
    /// `lease_now` is read from the clock just before (the lease's margin is small).
    pub fn read(
        &mut self,
        request: &RaftCmdRequest,
        cb: ReadCallback<EK::Snapshot>,
        now: Instant,
        lease_now: Instant,
    ) {
        if let Err(e) = self.check_request(request) {
            self.reply_read(cb, Err(e));
            return;
        }
        self.last_read = Some(now);
        if self.can_read_locally(lease_now) {
            let snapshot = self.snapshot();
            self.reply_read(cb, Ok(snapshot));
            return;
        }
        let waiter = ReadWaiter {
            request: request.clone(),
            cb,
        };
        if let Some(id) = self.pending_reads.push(waiter, now) {
            self.raw.read_index(id.to_be_bytes().to_vec());
        }
    }

    /// The lease holds and every write committed before this term is applied here. A leader
    /// transfer suspends the lease: the target may become leader before it would expire.
    pub fn can_read_locally(&self, now: Instant) -> bool {
        self.is_leader()
            && self.raw.raft.lead_transferee.is_none()
            && self.applied_term == self.term()
            && self.storage().applied_index() >= self.last_split_index
            && self.lease_is_valid(now)
    }

    fn lease_is_valid(&self, now: Instant) -> bool {
        // A planted bug (simulator tests only): a lease that never expires.
        fail::fail_point!("plant_lease_read_without_lease", |_| true);
        self.lease.is_valid(now)
    }

    pub(crate) fn snapshot(&self) -> RegionSnapshot<EK::Snapshot> {
        let kv = self.storage().kv_engine();
        // The applied index is read before the engine snapshot: the view holds at least it.
        let applied = self.storage().applied_index();
        RegionSnapshot::new(Arc::new(kv.snapshot()), self.region().clone())
            .with_term(self.term())
            .with_applied_index(applied)
    }

    pub(crate) fn serve_reads(&mut self) {
        let ready = self
            .pending_reads
            .take_ready(self.storage().applied_index());
        if ready.iter().all(|r| r.waiters.is_empty()) {
            return;
        }
        let snapshot = self.snapshot();
        for read in ready {
            for ReadWaiter { request, cb } in read.waiters {
                // A client that saw the old range would take a snapshot of the new, smaller
                // one as the whole of its region (a scan would silently skip keys).
                let result = write::check_epoch(self.region(), &request).map(|()| snapshot.clone());
                self.reply_read(cb, result);
            }
        }
    }

    /// Extends the lease to `sent + max lease`, except while leadership is being transferred
    /// (the target may win by a forced campaign that ignores followers' leases) and for
    /// anything sent before the end of the last transfer.
    pub(crate) fn renew_lease(&mut self, sent: Instant, now: Instant) {
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.transferring {
            self.transferring = false;
            self.renew_floor = Some(now);
        }
        if self.renew_floor.is_some_and(|floor| sent < floor) {
            return;
        }
        self.lease.renew(sent);
    }

    pub(crate) fn on_read_confirmed(&mut self, ctx: &[u8], index: u64, now: Instant) {
        let Ok(id) = <[u8; 8]>::try_from(ctx).map(u64::from_be_bytes) else {
            slog::warn!(self.logger, "read state with a foreign context"; "len" => ctx.len());
            return;
        };
        if let Some(issued) = self.pending_reads.confirm(id, index) {
            if self.is_leader() {
                // The heartbeats a quorum answered were sent after the request was issued.
                self.renew_lease(issued, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_valid_only_until_send_time_plus_max() {
        let t0 = Instant::now();
        let mut lease = Lease::new(Duration::from_millis(900));
        assert!(!lease.is_valid(t0));
        lease.renew(t0);
        assert!(lease.is_valid(t0 + Duration::from_millis(899)));
        assert!(!lease.is_valid(t0 + Duration::from_millis(900)));
        // An older acknowledgement never shortens it.
        lease.renew(t0 - Duration::from_millis(500));
        assert!(lease.is_valid(t0 + Duration::from_millis(899)));
        assert!(lease.needs_renewal(t0 + Duration::from_millis(700)));
        assert!(!lease.needs_renewal(t0 + Duration::from_millis(100)));
        lease.expire();
        assert!(!lease.is_valid(t0));
    }

    #[test]
    fn reads_are_served_in_order_once_confirmed_and_applied() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let mut reads = PendingReads::default();
        let a = reads.push("a", t0).unwrap();
        assert_eq!(reads.push("a2", t0), None, "same round shares a request");
        let b = reads.push("b", t1).unwrap();
        assert_eq!(reads.len(), 3);
        assert_eq!(reads.confirm(b, 12), Some(t1));
        assert!(reads.take_ready(20).iter().all(|r| r.id == b));
        assert_eq!(reads.confirm(a, 10), Some(t0));
        assert!(reads.take_ready(9).is_empty());
        let ready = reads.take_ready(10);
        assert_eq!(ready[0].waiters, vec!["a", "a2"]);
        assert!(reads.is_empty());
        let c = reads.push("c", t1).unwrap();
        assert_eq!(reads.to_resend(t1 + Duration::from_millis(1), t1), vec![c]);
        assert_eq!(reads.take_expired(t1 + Duration::from_millis(1)).len(), 1);
    }
}
