//! Listing shards: each status's entries in every listing index spread over several partition
//! keys, so that no key takes more writes than DynamoDB lets one take.
//!
//! An index entry changes with almost every message (`lastMessageNumber`, `lastMessageTime`,
//! `speed`), and DynamoDB bills a changed key as a delete and a put. With one partition key per
//! status, every launched rocket's entries share one key per index, and DynamoDB caps a key at
//! about 1,000 write units a second: a few hundred messages a second in all. A rocket's entries
//! go instead to shard `hash(channel) mod shards` of its status, each shard a partition key of
//! its own, and a page merges the shards' pages (see `merge`).
//!
//! Shard 0 keeps the status's own name, so one shard is the unsharded layout, and raising the
//! count needs no migration: every shard number a rocket was written under before stays below
//! the new count, so the reader still finds it, and its next write moves it. Lowering the count
//! would hide rockets in the shards dropped until they are written again.

use rockets::config::ConfigError;
use rockets::message::Channel;
use rockets::rocket::Status;

/// How many partition keys each status's listing entries are spread over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ListingShards(u16);

impl Default for ListingShards {
    fn default() -> Self {
        ListingShards::ONE
    }
}

impl ListingShards {
    /// The unsharded layout: one partition key per status.
    pub const ONE: ListingShards = ListingShards(1);
    /// The most shards a table may have: a page of every status then reads this many partition
    /// keys three times over.
    pub const MAX: u16 = 8192;
    /// The environment variable that sets the count; apply and query must agree on it.
    pub const ENV: &'static str = "LISTING_SHARDS";

    /// `count` shards, if it is from 1 to [`ListingShards::MAX`].
    pub fn new(count: u16) -> Option<Self> {
        (1..=Self::MAX)
            .contains(&count)
            .then_some(ListingShards(count))
    }

    /// The count `LISTING_SHARDS` sets, one if it is unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        rockets::config::parsed(Self::ENV, Self::ONE)
    }

    pub fn count(self) -> u16 {
        self.0
    }

    /// The shard a channel's entries go to: FNV-1a of its name, which, unlike std's hasher, is
    /// the same in every build, as a table written by one build and read by the next needs.
    pub fn of(self, channel: &Channel) -> u16 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in channel.as_str().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % u64::from(self.0)) as u16
    }

    /// The partition key of a status's shard in every listing index: the status's name for
    /// shard 0, then `<status>#<shard>`.
    pub fn partition(status: Status, shard: u16) -> String {
        if shard == 0 {
            status.as_str().to_owned()
        } else {
            format!("{}#{shard}", status.as_str())
        }
    }

    /// The partition key of a rocket's entries.
    pub fn partition_of(self, status: Status, channel: &Channel) -> String {
        Self::partition(status, self.of(channel))
    }

    /// Every partition key of a status, or of every status.
    pub fn partitions(self, status: Option<Status>) -> Vec<String> {
        let statuses: &[Status] = match &status {
            Some(status) => std::slice::from_ref(status),
            None => &Status::ALL,
        };
        statuses
            .iter()
            .flat_map(|status| (0..self.0).map(|shard| Self::partition(*status, shard)))
            .collect()
    }

    /// The status a partition key belongs to.
    pub fn status_of(partition: &str) -> Option<Status> {
        Status::parse(
            partition
                .split_once('#')
                .map_or(partition, |(status, _)| status),
        )
    }
}

impl std::str::FromStr for ListingShards {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.parse()
            .ok()
            .and_then(ListingShards::new)
            .ok_or_else(|| format!("must be a whole number from 1 to {}", Self::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn one_shard_is_the_unsharded_layout() {
        let one = ListingShards::ONE;
        assert_eq!(one.of(&channel("anything")), 0);
        assert_eq!(
            one.partition_of(Status::Launched, &channel("a")),
            "launched"
        );
        assert_eq!(
            one.partitions(None),
            ["pending", "launched", "exploded"].map(String::from)
        );
    }

    #[test]
    fn a_channel_keeps_its_shard_and_shards_share_the_channels() {
        let shards = ListingShards::new(16).unwrap();
        let names: Vec<Channel> = (0..1600).map(|i| channel(&format!("rocket-{i}"))).collect();
        let mut counts = [0usize; 16];
        for name in &names {
            let shard = shards.of(name);
            assert_eq!(shard, shards.of(name));
            counts[usize::from(shard)] += 1;
        }
        // A hundred each on average; a hash that spread them badly would leave some far off.
        assert!(counts.iter().all(|c| (50..150).contains(c)), "{counts:?}");
        // The same in every build: a table outlives the binary that wrote it.
        assert_eq!(
            ListingShards::new(4096).unwrap().of(&channel("rocket-0")),
            1192
        );
    }

    #[test]
    fn partitions_name_their_status_and_shard() {
        let shards = ListingShards::new(3).unwrap();
        assert_eq!(
            shards.partitions(Some(Status::Exploded)),
            ["exploded", "exploded#1", "exploded#2"].map(String::from)
        );
        assert_eq!(shards.partitions(None).len(), 9);
        for partition in shards.partitions(None) {
            let status = ListingShards::status_of(&partition).unwrap();
            assert!(partition.starts_with(status.as_str()));
        }
        assert_eq!(ListingShards::status_of("lost#3"), None);
    }

    #[test]
    fn the_count_is_bounded() {
        assert_eq!(ListingShards::new(0), None);
        assert_eq!(ListingShards::new(ListingShards::MAX + 1), None);
        assert_eq!(
            ListingShards::new(ListingShards::MAX).unwrap().count(),
            8192
        );
        assert_eq!("64".parse(), Ok(ListingShards(64)));
        for wrong in ["0", "8193", "-1", "two", ""] {
            assert!(wrong.parse::<ListingShards>().is_err(), "{wrong}");
        }
    }
}
