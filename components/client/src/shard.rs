//! Cutting a request into per-region parts: keys grouped by region (and into bounded chunks),
//! ranges clipped to regions. Pure functions over the [`RegionCache`].

use crate::region_cache::{RegionCache, Route};

/// An item of a batch, ordered and routed by its key.
pub(crate) trait Keyed {
    fn key(&self) -> &[u8];
    /// Bytes it adds to a request.
    fn size(&self) -> usize;
}

impl Keyed for Vec<u8> {
    fn key(&self) -> &[u8] {
        self
    }
    fn size(&self) -> usize {
        self.len()
    }
}

impl Keyed for (Vec<u8>, Vec<u8>) {
    fn key(&self) -> &[u8] {
        &self.0
    }
    fn size(&self) -> usize {
        self.0.len() + self.1.len()
    }
}

/// Bounds of one batch request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_keys: usize,
    pub max_bytes: usize,
}

/// Per-region parts, or what was being split back with a key no cached region holds (load
/// its region, then try again).
pub(crate) type Split<T> = Result<Vec<(Route, T)>, (T, Vec<u8>)>;

/// A part of a batch operation not yet done. Each attempt splits it by the cache as it is
/// then, so a part that failed on a stale route is re-cut along the new regions.
pub(crate) trait Piece: Sized {
    /// The per-region parts, or `self` back with the first key the cache does not cover.
    fn split(self, cache: &RegionCache, limits: Limits) -> Split<Self>;
}

/// Keys (or pairs) of a batch operation.
#[derive(Debug)]
pub(crate) struct Keys<I>(pub Vec<I>);

impl<I: Keyed> Piece for Keys<I> {
    fn split(self, cache: &RegionCache, limits: Limits) -> Split<Self> {
        let groups = group_by_region(cache, self.0).map_err(|(items, key)| (Keys(items), key))?;
        Ok(groups
            .into_iter()
            .flat_map(|(route, items)| {
                chunk(items, limits)
                    .into_iter()
                    .map(move |c| (route.clone(), Keys(c)))
            })
            .collect())
    }
}

/// A key range `[start, end)`; an empty `end` means the end of the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl Piece for KeyRange {
    fn split(self, cache: &RegionCache, _: Limits) -> Split<Self> {
        let mut parts = Vec::new();
        let mut start = self.start.clone();
        loop {
            let Some(route) = cache.locate(&start) else {
                return Err((self, start));
            };
            let (end, next) = forward_step(&route, &self.end);
            parts.push((route, KeyRange { start, end }));
            match next {
                Some(next) => start = next,
                None => return Ok(parts),
            }
        }
    }
}

/// Sorts `items` by key (stably: a later put of the same key stays later) and groups them by
/// the cached region holding each key. On a key no cached region holds, gives the items back
/// with that key.
pub(crate) fn group_by_region<I: Keyed>(cache: &RegionCache, mut items: Vec<I>) -> Split<Vec<I>> {
    items.sort_by(|a, b| a.key().cmp(b.key()));
    // First find every boundary, so that nothing is moved unless every key is covered.
    let mut bounds: Vec<(Route, usize)> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let Some(route) = cache.locate(items[i].key()) else {
            let key = items[i].key().to_vec();
            return Err((items, key));
        };
        let end = route.end_key();
        let j = i + items[i..].partition_point(|it| end.is_empty() || it.key() < end);
        bounds.push((route, j));
        i = j;
    }
    let mut rest = items.into_iter();
    let mut taken = 0;
    Ok(bounds
        .into_iter()
        .map(|(route, end)| {
            let group = rest.by_ref().take(end - taken).collect();
            taken = end;
            (route, group)
        })
        .collect())
}

/// Cuts a group into requests of at most `max_keys` items and about `max_bytes` bytes (an
/// item bigger than that goes alone).
pub(crate) fn chunk<I: Keyed>(items: Vec<I>, limits: Limits) -> Vec<Vec<I>> {
    let mut chunks = Vec::new();
    let mut current: Vec<I> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.size();
        if !current.is_empty()
            && (current.len() >= limits.max_keys || bytes + size > limits.max_bytes)
        {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The smaller of two range ends, where empty means +infinity.
pub(crate) fn min_end<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

/// One forward step within `route` of a range ending at `end` (empty: no end): the end to
/// send (clipped to the region) and where the next step starts, if anywhere.
pub(crate) fn forward_step(route: &Route, end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let region_end = route.end_key();
    let send_end = min_end(end, region_end).to_vec();
    let done = region_end.is_empty() || (!end.is_empty() && region_end >= end);
    (send_end, (!done).then(|| region_end.to_vec()))
}

/// One reverse step within `route` (located by [`RegionCache::locate_before`] the current
/// upper bound) of a range starting at `lower`: the lower bound to send (clipped to the
/// region) and the upper bound of the next step, if any.
pub(crate) fn reverse_step(route: &Route, lower: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let region_start = route.start_key();
    let send_lower = lower.max(region_start).to_vec();
    let done = region_start <= lower;
    (send_lower, (!done).then(|| region_start.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region_cache::tests::{region, three_regions};

    const NO_LIMITS: Limits = Limits {
        max_keys: usize::MAX,
        max_bytes: usize::MAX,
    };

    fn keys(ks: &[&str]) -> Vec<Vec<u8>> {
        ks.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn keys_are_grouped_by_region_in_key_order() {
        let c = three_regions();
        let groups = group_by_region(&c, keys(&["e", "a", "c", "", "b", "zz", "bb"])).unwrap();
        let got: Vec<(u64, Vec<Vec<u8>>)> = groups
            .into_iter()
            .map(|(r, ks)| (r.region_id(), ks))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, keys(&["", "a"])),
                (2, keys(&["b", "bb", "c"])),
                (3, keys(&["e", "zz"])),
            ]
        );
    }

    #[test]
    fn grouping_keeps_duplicates_in_order() {
        let c = three_regions();
        let pairs = vec![
            (b"c".to_vec(), b"1".to_vec()),
            (b"a".to_vec(), b"x".to_vec()),
            (b"c".to_vec(), b"2".to_vec()),
        ];
        let groups = group_by_region(&c, pairs).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[1].1,
            vec![
                (b"c".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn grouping_reports_an_uncovered_key_and_keeps_items() {
        let mut c = three_regions();
        c.invalidate(2);
        let (items, missing) = group_by_region(&c, keys(&["a", "c", "e"])).unwrap_err();
        assert_eq!(missing, b"c");
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn chunks_respect_key_and_byte_limits() {
        let items: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
        let by_keys = chunk(
            items.clone(),
            Limits {
                max_keys: 4,
                max_bytes: usize::MAX,
            },
        );
        assert_eq!(by_keys.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let by_bytes = chunk(
            items,
            Limits {
                max_keys: 100,
                max_bytes: 25,
            },
        );
        assert_eq!(
            by_bytes.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 2, 2]
        );
        // An oversized item still goes, alone.
        let big = chunk(
            vec![vec![0; 100], vec![1; 1]],
            Limits {
                max_keys: 100,
                max_bytes: 25,
            },
        );
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn batch_put_splits_big_groups_at_4096_keys() {
        let mut c = RegionCache::default();
        c.insert(region(1, b"", b"", 1), None);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![]))
            .collect();
        let limits = Limits {
            max_keys: 4096,
            max_bytes: 8 << 20,
        };
        let parts = Keys(pairs).split(&c, limits).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|(_, k)| k.0.len()).collect();
        assert_eq!(sizes, [4096, 4096, 1808]);
    }

    fn range(start: &str, end: &str) -> KeyRange {
        KeyRange {
            start: start.as_bytes().to_vec(),
            end: end.as_bytes().to_vec(),
        }
    }

    fn split(c: &RegionCache, r: KeyRange) -> Vec<(u64, KeyRange)> {
        r.split(c, NO_LIMITS)
            .unwrap()
            .into_iter()
            .map(|(route, r)| (route.region_id(), r))
            .collect()
    }

    #[test]
    fn ranges_are_clipped_to_regions() {
        let c = three_regions();
        assert_eq!(
            split(&c, range("a", "e")),
            vec![
                (1, range("a", "b")),
                (2, range("b", "d")),
                (3, range("d", "e"))
            ]
        );
        assert_eq!(split(&c, range("bb", "c")), vec![(2, range("bb", "c"))]);
        // Ends on a region boundary: no empty piece in the next region.
        assert_eq!(
            split(&c, range("a", "d")),
            vec![(1, range("a", "b")), (2, range("b", "d"))]
        );
        // Unbounded both ways.
        assert_eq!(
            split(&c, range("", "")),
            vec![
                (1, range("", "b")),
                (2, range("b", "d")),
                (3, range("d", ""))
            ]
        );
    }

    #[test]
    fn range_split_reports_a_hole() {
        let mut c = three_regions();
        c.invalidate(2);
        let (back, missing) = range("a", "z").split(&c, NO_LIMITS).unwrap_err();
        assert_eq!(missing, b"b");
        assert_eq!(back, range("a", "z"));
    }

    #[test]
    fn forward_steps_walk_regions() {
        let c = three_regions();
        let r1 = c.locate(b"a").unwrap();
        assert_eq!(
            forward_step(&r1, b"c"),
            (b"b".to_vec(), Some(b"b".to_vec()))
        );
        assert_eq!(forward_step(&r1, b"ab"), (b"ab".to_vec(), None));
        assert_eq!(forward_step(&r1, b"b"), (b"b".to_vec(), None));
        assert_eq!(forward_step(&r1, b""), (b"b".to_vec(), Some(b"b".to_vec())));
        let r3 = c.locate(b"d").unwrap();
        assert_eq!(forward_step(&r3, b""), (vec![], None));
        assert_eq!(forward_step(&r3, b"x"), (b"x".to_vec(), None));
    }

    #[test]
    fn reverse_steps_walk_regions_backwards() {
        let c = three_regions();
        let r3 = c.locate_before(b"").unwrap();
        assert_eq!(r3.region_id(), 3);
        assert_eq!(
            reverse_step(&r3, b"a"),
            (b"d".to_vec(), Some(b"d".to_vec()))
        );
        assert_eq!(reverse_step(&r3, b"e"), (b"e".to_vec(), None));
        assert_eq!(reverse_step(&r3, b"d"), (b"d".to_vec(), None));
        let r1 = c.locate_before(b"b").unwrap();
        assert_eq!(reverse_step(&r1, b""), (vec![], None));
    }

    #[test]
    fn min_end_treats_empty_as_infinite() {
        assert_eq!(min_end(b"", b"b"), b"b");
        assert_eq!(min_end(b"b", b""), b"b");
        assert_eq!(min_end(b"a", b"b"), b"a");
        assert_eq!(min_end(b"", b""), b"");
    }
}
