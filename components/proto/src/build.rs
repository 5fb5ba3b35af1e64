//! Short builders for the `metapb` values tests and benches make over and over: peers and
//! regions. Everything a builder leaves unset keeps the type's default, as the struct literal
//! it replaces would have.
//!
//! ```
//! use proto::build::{learner, peer, region};
//! use proto::metapb::PeerRole;
//!
//! let r = region(1)
//!     .range(b"a", b"z")
//!     .epoch(2, 3)
//!     .peers([peer(11, 1), peer(12, 2), learner(13, 3)])
//!     .build();
//! assert_eq!((r.start_key.as_slice(), r.end_key.as_slice()), (&b"a"[..], &b"z"[..]));
//! let epoch = r.region_epoch.unwrap();
//! assert_eq!((epoch.conf_ver, epoch.version), (2, 3));
//! assert_eq!(r.peers[2].role(), PeerRole::Learner);
//!
//! // Nothing set but the id: no range (the whole key space), no epoch, no peers.
//! assert_eq!(region(7).build(), proto::metapb::Region { id: 7, ..Default::default() });
//! ```

use crate::metapb::{Peer, PeerRole, Region, RegionEpoch};

/// A voter `id` on store `store_id`.
pub fn peer(id: u64, store_id: u64) -> Peer {
    peer_with_role(id, store_id, PeerRole::Voter)
}

/// A learner `id` on store `store_id`.
pub fn learner(id: u64, store_id: u64) -> Peer {
    peer_with_role(id, store_id, PeerRole::Learner)
}

/// Peer `id` on store `store_id` in `role` (joint-consensus roles included).
pub fn peer_with_role(id: u64, store_id: u64, role: PeerRole) -> Peer {
    Peer {
        id,
        store_id,
        role: role as i32,
        ..Default::default()
    }
}

/// An epoch, in the fields' order: `conf_ver` (membership changes), then `version`
/// (splits and merges).
pub fn epoch(conf_ver: u64, version: u64) -> RegionEpoch {
    RegionEpoch { conf_ver, version }
}

/// Starts region `id`; see [`RegionBuilder`].
pub fn region(id: u64) -> RegionBuilder {
    RegionBuilder(Region {
        id,
        ..Default::default()
    })
}

/// A [`Region`] under construction, from [`region`]. [`Self::build`] (or `Region::from`)
/// finishes it.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RegionBuilder(Region);

impl RegionBuilder {
    /// The key range `[start, end)`; an empty key is unbounded on that side.
    pub fn range(mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        self.0.start_key = start.into();
        self.0.end_key = end.into();
        self
    }

    /// The epoch, in the fields' order: `conf_ver`, then `version` (see [`epoch`]).
    pub fn epoch(mut self, conf_ver: u64, version: u64) -> Self {
        self.0.region_epoch = Some(epoch(conf_ver, version));
        self
    }

    /// Appends `peers`, in order.
    pub fn peers(mut self, peers: impl IntoIterator<Item = Peer>) -> Self {
        self.0.peers.extend(peers);
        self
    }

    /// The region.
    pub fn build(self) -> Region {
        self.0
    }
}

impl From<RegionBuilder> for Region {
    fn from(b: RegionBuilder) -> Region {
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_only_what_they_are_given() {
        assert_eq!(
            peer(5, 2),
            Peer {
                id: 5,
                store_id: 2,
                ..Default::default()
            }
        );
        assert_eq!(learner(5, 2).role(), PeerRole::Learner);
        assert_eq!(
            peer_with_role(5, 2, PeerRole::DemotingVoter).role(),
            PeerRole::DemotingVoter
        );
        let r = region(3)
            .range(b"".as_slice(), vec![b'm'])
            .epoch(1, 2)
            .peers([peer(31, 1)])
            .peers([learner(32, 2)])
            .build();
        assert_eq!(
            r,
            Region {
                id: 3,
                start_key: vec![],
                end_key: b"m".to_vec(),
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 2
                }),
                peers: vec![
                    Peer {
                        id: 31,
                        store_id: 1,
                        ..Default::default()
                    },
                    Peer {
                        id: 32,
                        store_id: 2,
                        role: PeerRole::Learner as i32,
                        ..Default::default()
                    }
                ],
                ..Default::default()
            }
        );
    }
}
