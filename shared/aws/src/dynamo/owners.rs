//! Who owns each channel, when auth is on: the item `~owner` of the channel, written once, by
//! the first sender to write the channel (its `sort key` sorts after the state item, outside
//! every range the store reads).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_dynamodb::Client;

use super::{key, s, text};
use crate::store_error;
use rockets::config::ConfigError;
use rockets::message::Channel;
use rockets::ports::{ChannelOwners, StoreError};

const OWNER: &str = "~owner";

/// Owners a container remembers at most; past that it forgets them all and asks again.
const REMEMBERED: usize = 100_000;

/// The channels' owners in the rocket table, each remembered once read: an owner never changes.
#[derive(Debug)]
pub struct DynamoOwners {
    client: Client,
    table: String,
    known: Mutex<HashMap<Channel, String>>,
}

impl DynamoOwners {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoOwners {
            client,
            table: table.into(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The variable that turns ownership on (`on`), as the template does when auth is on.
    pub const ENV: &'static str = "CHANNEL_OWNERS";

    /// The owners in the table `TABLE_NAME` when `CHANNEL_OWNERS` is `on`; none otherwise.
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Option<Self>, ConfigError> {
        if rockets::config::parsed(Self::ENV, "off".to_string())? != "on" {
            return Ok(None);
        }
        let table = rockets::config::required(super::DynamoStore::ENV)?;
        Ok(Some(Self::new(Client::new(config), table)))
    }

    /// The channel's owner as stored, if it has one.
    async fn stored(
        &self,
        channel: &Channel,
        consistent: bool,
    ) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(channel, OWNER)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| store_error("read owner", e))?;
        output
            .item
            .map(|item| text(&item, "owner").map(str::to_owned))
            .transpose()
    }

    /// Makes `sender` the channel's owner unless it has one; the owner either way.
    async fn bind(&self, channel: &Channel, sender: &str) -> Result<String, StoreError> {
        let mut item = key(channel, OWNER);
        item.insert("owner".into(), s(sender));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(sender.to_owned()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let owner = self.stored(channel, true).await?;
                owner.ok_or_else(|| StoreError::Failed("an owner item vanished".into()))
            }
            Err(error) => Err(store_error("bind owner", error)),
        }
    }
}

impl ChannelOwners for DynamoOwners {
    async fn claim(&self, channel: &Channel, sender: &str) -> Result<bool, StoreError> {
        let remembered = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned();
        let owner = match remembered {
            Some(owner) => owner,
            None => {
                let owner = match self.stored(channel, false).await? {
                    Some(owner) => owner,
                    None => self.bind(channel, sender).await?,
                };
                let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                if known.len() >= REMEMBERED {
                    known.clear();
                }
                known.insert(channel.clone(), owner.clone());
                owner
            }
        };
        Ok(owner == sender)
    }
}
