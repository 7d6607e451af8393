//! A member's own settings of a conversation: muted, pinned, archived.
//!
//! They are the member's, not the conversation's: a change is an event of the
//! member's own stream (`settings`, recorded in the same transaction), never an entry
//! of the conversation's seq stream, and it moves no seq.

use crate::contacts::Changed;
use crate::error::StoreError;
use crate::events::record_user_event;
use crate::store::Store;
use chat_wire::{ConvId, MemberSettings, Mute, SettingsRequest, UserEvent, UserId};
use chrono::{DateTime, Utc};

/// Changes the given settings of member `$2` of `$1` (`$3`: change the mute, `$4`
/// forever, `$5` until; `$6`/`$7` pinned and archived or NULL to keep). Answers the
/// settings as they now are, or no row where the user is no member.
const SET_SETTINGS: &str = "UPDATE members SET
       muted_until = CASE WHEN NOT $3 THEN muted_until
                          WHEN $4 THEN 'infinity'::timestamptz
                          ELSE $5::timestamptz END,
       pinned = COALESCE($6, pinned),
       archived = COALESCE($7, archived)
 WHERE conv = $1 AND user_id = $2
 RETURNING CASE WHEN muted_until = 'infinity' THEN NULL ELSE muted_until END AS muted_until,
           COALESCE(muted_until = 'infinity', false) AS muted_forever, pinned, archived";

/// A broadcast reader's row, made on first use (as on a first read).
const BROADCAST_ROW: &str = "INSERT INTO members (conv, user_id) VALUES ($1, $2)
     ON CONFLICT (conv, user_id) DO NOTHING";

impl Store {
    /// Changes `user`'s own settings of `conv` and records a `settings` event with
    /// them in the user's stream, in one transaction. The caller has checked that the
    /// user may see `conv`; `broadcast` creates a broadcast reader's row. `None`: the
    /// user is no member (any more).
    pub async fn set_settings(
        &self,
        user: UserId,
        conv: ConvId,
        broadcast: bool,
        change: &SettingsRequest,
    ) -> Result<Option<Changed<MemberSettings>>, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        if broadcast {
            let stmt = tx.prepare_cached(BROADCAST_ROW).await?;
            tx.execute(&stmt, &[&conv.0, &user.0]).await?;
        }
        let (mute_given, forever, until): (bool, bool, Option<DateTime<Utc>>) =
            match change.muted_until {
                None => (false, false, None),
                Some(None) => (true, false, None),
                Some(Some(Mute::Forever)) => (true, true, None),
                Some(Some(Mute::Until(t))) => (true, false, Some(t)),
            };
        let stmt = tx.prepare_cached(SET_SETTINGS).await?;
        let Some(row) = tx
            .query_opt(
                &stmt,
                &[
                    &conv.0,
                    &user.0,
                    &mute_given,
                    &forever,
                    &until,
                    &change.pinned,
                    &change.archived,
                ],
            )
            .await?
        else {
            return Ok(None);
        };
        let settings = MemberSettings {
            muted_until: crate::rows::mute(&row)?,
            pinned: row.try_get("pinned")?,
            archived: row.try_get("archived")?,
        };
        let event = UserEvent::Settings {
            conv,
            muted_until: settings.muted_until,
            pinned: settings.pinned,
            archived: settings.archived,
        };
        let recorded = record_user_event(&tx, user, &event).await?;
        tx.commit().await?;
        Ok(Some(Changed {
            value: settings,
            events: vec![recorded],
        }))
    }
}
