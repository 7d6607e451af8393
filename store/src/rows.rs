//! Decoding of rows shared by several domains. Every column is read by name, never by
//! position, so a statement may list its columns in any order.

use crate::error::StoreError;
use chat_wire::{
    Attachment, ConvId, ConversationKind, Message, MessageKind, ReactionChange, Role, Seq,
    SystemEntry, Tier, UserId,
};
use std::borrow::Cow;
use tokio_postgres::Row;

/// The columns of a message row that [`message_prefixed`] reads: the tests hold
/// `message_columns!` and the statements that select a message to this list.
#[cfg(test)]
pub(crate) const MESSAGE_COLUMNS: [&str; 13] = [
    "conv",
    "seq",
    "sender",
    "cid",
    "body",
    "tier",
    "created_at",
    "reply_to",
    "kind",
    "attach",
    "mentions",
    "target",
    "meta",
];

/// The caller's mute of a row with `muted_until` (finite, still holding, or NULL) and
/// `muted_forever` (see `settings_columns!`).
pub(crate) fn mute(row: &Row) -> Result<Option<chat_wire::Mute>, StoreError> {
    if row.try_get::<_, bool>("muted_forever")? {
        return Ok(Some(chat_wire::Mute::Forever));
    }
    let until: Option<chrono::DateTime<chrono::Utc>> = row.try_get("muted_until")?;
    Ok(until.map(chat_wire::Mute::Until))
}

pub(crate) fn parse_kind(s: &str) -> Result<ConversationKind, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected conversation kind {s}")))
}

pub(crate) fn parse_message_kind(s: &str) -> Result<MessageKind, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected message kind {s}")))
}

pub(crate) fn parse_role(s: &str) -> Result<Role, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Unavailable(format!("unexpected role {s}")))
}

/// A JSON column as `T`; a stored value that no longer decodes is an error of the
/// store, never of the caller.
fn json<T: serde::de::DeserializeOwned>(
    v: Option<serde_json::Value>,
    what: &str,
) -> Result<Option<T>, StoreError> {
    v.map(|v| {
        serde_json::from_value(v)
            .map_err(|e| StoreError::Unavailable(format!("unexpected {what}: {e}")))
    })
    .transpose()
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
    let kind: String = row.try_get(&*col("kind"))?;
    let kind = parse_message_kind(&kind)?;
    let meta: Option<serde_json::Value> = row.try_get(&*col("meta"))?;
    let (system, reaction) = match kind {
        MessageKind::System => (json::<SystemEntry>(meta, "system entry")?, None),
        MessageKind::Reaction => (None, json::<ReactionChange>(meta, "reaction")?),
        _ => (None, None),
    };
    let mentions: Option<Vec<i64>> = row.try_get(&*col("mentions"))?;
    Ok(Some(Message {
        conv: ConvId(conv),
        seq: Seq(row.try_get(&*col("seq"))?),
        sender: UserId(row.try_get(&*col("sender"))?),
        cid: row.try_get(&*col("cid"))?,
        body: row.try_get(&*col("body"))?,
        tier: parse_tier(&tier)?,
        ts: row.try_get(&*col("created_at"))?,
        reply_to: row.try_get::<_, Option<i64>>(&*col("reply_to"))?.map(Seq),
        kind,
        attach: json::<Attachment>(row.try_get(&*col("attach"))?, "attachment")?,
        mentions: mentions
            .unwrap_or_default()
            .into_iter()
            .map(UserId)
            .collect(),
        target: row.try_get::<_, Option<i64>>(&*col("target"))?.map(Seq),
        system,
        reaction,
        edited: false,
        recalled: false,
        reactions: Vec::new(),
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
