//! Folding: history, sync and the conversation list return each message as it stands,
//! with the edits, recalls and reactions that act on it applied (the entries
//! themselves stay in the stream, for clients that hold the message already).

use crate::error::StoreError;
use crate::messages::lower_bound;
use crate::retention::Cutoffs;
use crate::rows::parse_message_kind;
use crate::sql::retained;
use chat_wire::{Message, MessageKind, ReactionChange, ReactionCount, UserId};
#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::{BTreeSet, HashMap};

/// The entries acting on the given messages (`$1` convs, `$2` seqs; cutoffs `$3`,
/// `$4`), from `$5` on (they are never older than the messages they act on), in seq
/// order: one probe of `messages_conv_target` per message and partition.
const EFFECTS: &str = concat!(
    "SELECT x.conv, x.target, x.seq, x.kind, x.sender, x.body, x.meta
       FROM unnest($1::bigint[], $2::bigint[]) AS k(conv, seq)
       JOIN messages x ON x.conv = k.conv AND x.target = k.seq
      WHERE x.created_at >= $5 AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.conv, x.seq"
);

/// What the entries acting on one message amount to.
#[derive(Default)]
struct State {
    edit: Option<String>,
    recalled: bool,
    /// Who has each emoji on, in the order the emojis first came.
    reactions: Vec<(String, BTreeSet<i64>)>,
}

impl State {
    fn apply(
        &mut self,
        kind: MessageKind,
        sender: i64,
        body: String,
        meta: Option<ReactionChange>,
    ) {
        match kind {
            MessageKind::Edit => self.edit = Some(body),
            MessageKind::Recall => self.recalled = true,
            MessageKind::Reaction => {
                let Some(r) = meta else { return };
                let at = self.reactions.iter().position(|(e, _)| *e == r.emoji);
                match (at, r.on) {
                    (Some(i), true) => {
                        self.reactions[i].1.insert(sender);
                    }
                    (Some(i), false) => {
                        self.reactions[i].1.remove(&sender);
                    }
                    (None, true) => self.reactions.push((r.emoji, BTreeSet::from([sender]))),
                    (None, false) => {}
                }
            }
            _ => {}
        }
    }

    fn fold_into(&self, m: &mut Message, viewer: UserId) {
        if self.recalled {
            blank(m);
            return;
        }
        if let Some(body) = &self.edit {
            m.body.clone_from(body);
            m.edited = true;
        }
        m.reactions = self
            .reactions
            .iter()
            .filter(|(_, users)| !users.is_empty())
            .map(|(emoji, users)| ReactionCount {
                emoji: emoji.clone(),
                count: users.len() as i64,
                me: users.contains(&viewer.0),
            })
            .collect();
    }
}

/// A recalled message as everyone sees it: its body and attachment are gone.
fn blank(m: &mut Message) {
    m.recalled = true;
    m.body.clear();
    m.attach = None;
    m.mentions.clear();
    m.reactions.clear();
}

/// Applies the edits, recalls and reactions stored for `messages` (of any
/// conversations), as `viewer` sees them. An edit entry whose message was recalled
/// loses its body too.
pub(crate) async fn fold(
    client: &impl deadpool_postgres::GenericClient,
    viewer: UserId,
    messages: &mut [Message],
    cutoffs: Cutoffs,
) -> Result<(), StoreError> {
    let (mut convs, mut seqs) = (Vec::new(), Vec::new());
    let mut oldest = None;
    for m in messages.iter() {
        let seq = if m.kind.is_content() {
            Some(m.seq)
        } else if m.kind == MessageKind::Edit {
            m.target
        } else {
            None
        };
        if let Some(seq) = seq {
            convs.push(m.conv.0);
            seqs.push(seq.0);
            oldest = Some(oldest.map_or(m.ts, |o: chrono::DateTime<chrono::Utc>| o.min(m.ts)));
        }
    }
    let Some(oldest) = oldest else { return Ok(()) };
    let since = lower_bound(Some(crate::messages::day_of(oldest)));
    let stmt = client.prepare_cached(EFFECTS).await?;
    let rows = client
        .query(
            &stmt,
            &[&convs, &seqs, &cutoffs.normal, &cutoffs.important, &since],
        )
        .await?;
    let mut states: HashMap<(i64, i64), State> = HashMap::new();
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let meta: Option<serde_json::Value> = r.try_get("meta")?;
        let meta = meta.and_then(|v| serde_json::from_value::<ReactionChange>(v).ok());
        states
            .entry((r.try_get("conv")?, r.try_get("target")?))
            .or_default()
            .apply(
                parse_message_kind(&kind)?,
                r.try_get("sender")?,
                r.try_get("body")?,
                meta,
            );
    }
    for m in messages.iter_mut() {
        if m.kind.is_content() {
            if let Some(s) = states.get(&(m.conv.0, m.seq.0)) {
                s.fold_into(m, viewer);
            }
        } else if let Some(t) = m.target.filter(|_| m.kind == MessageKind::Edit) {
            if states.get(&(m.conv.0, t.0)).is_some_and(|s| s.recalled) {
                m.body.clear();
            }
        }
    }
    Ok(())
}

/// The reactions of a message by emoji, for tests of the fold.
#[cfg(test)]
fn counts(s: &State) -> BTreeMap<String, usize> {
    s.reactions
        .iter()
        .map(|(e, u)| (e.clone(), u.len()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(emoji: &str, on: bool) -> Option<ReactionChange> {
        Some(ReactionChange {
            emoji: emoji.into(),
            on,
        })
    }

    #[test]
    fn the_last_entry_of_each_user_counts() {
        let mut s = State::default();
        s.apply(MessageKind::Reaction, 1, String::new(), on("👍", true));
        s.apply(MessageKind::Reaction, 2, String::new(), on("👍", true));
        s.apply(MessageKind::Reaction, 2, String::new(), on("👍", true));
        s.apply(MessageKind::Reaction, 3, String::new(), on("🎉", true));
        s.apply(MessageKind::Reaction, 3, String::new(), on("🎉", false));
        s.apply(MessageKind::Reaction, 4, String::new(), on("❤", false));
        assert_eq!(counts(&s), BTreeMap::from([("👍".to_string(), 2)]));
        s.apply(MessageKind::Edit, 1, "first".into(), None);
        s.apply(MessageKind::Edit, 1, "second".into(), None);
        assert_eq!(s.edit.as_deref(), Some("second"));
        s.apply(MessageKind::Recall, 1, String::new(), None);
        assert!(s.recalled);
    }
}
