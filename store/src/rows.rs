//! Decoding of rows shared by several domains. Every column is read by name, never by
//! position, so a statement may list its columns in any order.

use crate::error::StoreError;
use chat_wire::{ConvId, ConversationKind, Message, Seq, Tier, UserId};
use std::borrow::Cow;
use tokio_postgres::Row;

/// The columns of a message row that [`message_prefixed`] reads: the tests hold
/// `message_columns!` and the statements that select a message to this list.
#[cfg(test)]
pub(crate) const MESSAGE_COLUMNS: [&str; 8] = [
    "conv",
    "seq",
    "sender",
    "cid",
    "body",
    "tier",
    "created_at",
    "reply_to",
];

pub(crate) fn parse_kind(s: &str) -> Result<ConversationKind, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected conversation kind {s}")))
}

pub(crate) fn parse_tier(s: &str) -> Result<Tier, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected tier {s}")))
}

/// The name of column `name` aliased with `prefix` (`""`: the column itself).
fn column<'a>(prefix: &str, name: &'a str) -> Cow<'a, str> {
    if prefix.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{prefix}{name}"))
    }
}

/// The message in the columns `message_columns!($m AS prefix)` selected; `None` where
/// they are NULL (an outer join that matched no message).
pub(crate) fn message_prefixed(row: &Row, prefix: &str) -> Result<Option<Message>, StoreError> {
    let col = |name| column(prefix, name);
    let conv: Option<i64> = row.try_get(&*col("conv"))?;
    let Some(conv) = conv else { return Ok(None) };
    let tier: String = row.try_get(&*col("tier"))?;
    Ok(Some(Message {
        conv: ConvId(conv),
        seq: Seq(row.try_get(&*col("seq"))?),
        sender: UserId(row.try_get(&*col("sender"))?),
        cid: row.try_get(&*col("cid"))?,
        body: row.try_get(&*col("body"))?,
        tier: parse_tier(&tier)?,
        ts: row.try_get(&*col("created_at"))?,
        reply_to: row.try_get::<_, Option<i64>>(&*col("reply_to"))?.map(Seq),
    }))
}

/// The message in the columns `message_columns!($m)` selected.
pub(crate) fn message(row: &Row) -> Result<Message, StoreError> {
    message_prefixed(row, "")?.ok_or(StoreError::NotFound("message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_prefix() {
        assert_eq!(column("", "seq"), "seq");
        assert!(matches!(column("", "seq"), Cow::Borrowed(_)));
        assert_eq!(column("lm_", "seq"), "lm_seq");
        assert_eq!(column("lm_", "created_at"), "lm_created_at");
    }

    #[test]
    fn kinds_and_tiers_parse() {
        assert!(matches!(
            parse_kind("broadcast"),
            Ok(ConversationKind::Broadcast)
        ));
        assert!(matches!(parse_tier("important"), Ok(Tier::Important)));
        assert!(matches!(
            parse_tier("urgent"),
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            parse_kind("room"),
            Err(StoreError::Unavailable(_))
        ));
    }
}
