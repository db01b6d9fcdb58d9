//! A page of a listing from the pages of its partitions (in DynamoDB, every shard of every
//! status asked for), exact however the entries are spread, in at most two rounds of reads.
//!
//! The first round reads a few entries from every partition: as many as the page would take
//! from each if the entries were spread evenly, and some over. Everything up to the first place
//! where a partition that was cut short stopped is then known, and when that holds the page,
//! the page is done. Otherwise the second round reads on, a whole page's worth, only the
//! partitions that stopped before the page's last candidate: afterwards each of them has either
//! run out or holds a page's worth before where it stopped, so the page is known.

/// What the reads of one partition key gave.
#[derive(Clone, Debug)]
pub struct PartitionRead<K> {
    /// The entries after the page's cursor, in the page's order.
    pub entries: Vec<K>,
    /// The last entry read, where a further read goes on from; `None` if nothing was read.
    pub last: Option<K>,
    /// Whether the partition may hold entries after `last`.
    pub more: bool,
}

impl<K> Default for PartitionRead<K> {
    /// Nothing read, and nothing more to read.
    fn default() -> Self {
        PartitionRead {
            entries: Vec::new(),
            last: None,
            more: false,
        }
    }
}

impl<K> PartitionRead<K> {
    /// The same read with its entries turned into other keys (in another order, say).
    pub fn map<L>(self, f: impl Fn(K) -> L) -> PartitionRead<L> {
        PartitionRead {
            entries: self.entries.into_iter().map(&f).collect(),
            last: self.last.map(&f),
            more: self.more,
        }
    }
}

/// What [`merge`] made of the reads so far.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Merged<K> {
    /// The listing's first `want` entries in order, or all of them if it holds fewer.
    Page(Vec<K>),
    /// The partitions (by their place in the reads) to read on before the page is known.
    ReadOn(Vec<usize>),
}

/// How many entries the first round reads from each partition for a page of `want`: all of
/// them with one shard a status, since a status can hold the whole page; with more, twice an
/// even share and two over, so that a second round is seldom needed.
pub fn first_read_limit(want: usize, shards: usize) -> usize {
    if shards <= 1 {
        want
    } else {
        (2 * want).div_ceil(shards).saturating_add(2).min(want)
    }
}

/// The page the reads give, with keys in the page's order (reversed for a descending page).
/// The same entry read from two partitions (a rocket that changed status between the reads)
/// counts once.
pub fn merge<K: Ord + Clone>(reads: &[PartitionRead<K>], want: usize) -> Merged<K> {
    let mut all: Vec<&K> = reads.iter().flat_map(|r| &r.entries).collect();
    all.sort_unstable();
    all.dedup();
    // Entries are known up to the first place a partition may hold more; one that may hold more
    // but has nothing read is known nowhere.
    let cut_short = || reads.iter().filter(|r| r.more);
    let known = match cut_short().map(|r| r.last.as_ref()).min() {
        None => all.len(),
        Some(None) => 0,
        Some(Some(bound)) => all.partition_point(|k| *k <= bound),
    };
    if known >= want || known == all.len() && cut_short().next().is_none() {
        return Merged::Page(all.into_iter().take(want).cloned().collect());
    }
    // The page ends at the latest at the `want`-th entry read so far: only partitions that
    // stopped before it can hold anything for the page.
    let candidate = all.get(want.saturating_sub(1)).copied();
    Merged::ReadOn(
        reads
            .iter()
            .enumerate()
            .filter(|(_, r)| r.more && candidate.is_none_or(|c| r.last.as_ref() < Some(c)))
            .map(|(i, _)| i)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads up to `limit` entries of `partition` (sorted) after `from`, as a Query would.
    fn read(partition: &[u32], from: Option<u32>, limit: usize, into: &mut PartitionRead<u32>) {
        let rest: Vec<u32> = partition
            .iter()
            .copied()
            .filter(|k| from.is_none_or(|f| *k > f))
            .collect();
        let taken = &rest[..limit.min(rest.len())];
        into.entries.extend_from_slice(taken);
        if let Some(last) = taken.last() {
            into.last = Some(*last);
        }
        into.more = rest.len() > taken.len();
    }

    /// Pages through every partition as the reader does; the page and the rounds it took.
    fn page(
        partitions: &[Vec<u32>],
        cursor: Option<u32>,
        want: usize,
        first: usize,
    ) -> (Vec<u32>, usize) {
        let mut reads: Vec<PartitionRead<u32>> = partitions
            .iter()
            .map(|p| {
                let mut r = PartitionRead::default();
                read(p, cursor, first, &mut r);
                r
            })
            .collect();
        for round in 1.. {
            match merge(&reads, want) {
                Merged::Page(page) => return (page, round),
                Merged::ReadOn(on) => {
                    assert!(!on.is_empty(), "reading on nothing");
                    for i in on {
                        let from = reads[i].last.or(cursor);
                        read(&partitions[i], from, want, &mut reads[i]);
                    }
                }
            }
        }
        unreachable!()
    }

    proptest! {
        #[test]
        fn a_merged_page_is_the_listing_s_page_within_two_rounds(
            keys in proptest::collection::vec((0u32..2000, 0usize..12), 0..300),
            partitions in 1usize..12,
            want in 1usize..40,
            first in 1usize..45,
            cursor in proptest::option::of(0u32..2000),
        ) {
            let mut spread = vec![Vec::new(); partitions];
            let mut everything: Vec<u32> = Vec::new();
            for (key, at) in keys {
                if !everything.contains(&key) {
                    everything.push(key);
                    spread[at % partitions].push(key);
                }
            }
            for p in &mut spread {
                p.sort_unstable();
            }
            everything.sort_unstable();
            let expected: Vec<u32> = everything
                .into_iter()
                .filter(|k| cursor.is_none_or(|c| *k > c))
                .take(want)
                .collect();
            let (got, rounds) = page(&spread, cursor, want, first.min(want));
            prop_assert_eq!(got, expected);
            prop_assert!(rounds <= 2, "{} rounds", rounds);
        }
    }

    #[test]
    fn a_page_spread_evenly_needs_one_round() {
        let partitions: Vec<Vec<u32>> = (0..64u32)
            .map(|p| (0..50u32).map(|i| i * 64 + p).collect())
            .collect();
        let first = first_read_limit(101, 64);
        assert_eq!(first, 6);
        let (page_, rounds) = page(&partitions, None, 101, first);
        assert_eq!(page_, (0..101).collect::<Vec<_>>());
        assert_eq!(rounds, 1);
    }

    #[test]
    fn one_shard_reads_the_whole_page_from_each_status() {
        assert_eq!(first_read_limit(101, 1), 101);
        assert_eq!(first_read_limit(3, 4096), 3);
    }

    #[test]
    fn a_rocket_read_in_two_partitions_counts_once() {
        let reads = [
            PartitionRead {
                entries: vec![1, 5],
                last: Some(5),
                more: false,
            },
            PartitionRead {
                entries: vec![5, 7],
                last: Some(7),
                more: false,
            },
        ];
        assert_eq!(merge(&reads, 10), Merged::Page(vec![1, 5, 7]));
    }
}
