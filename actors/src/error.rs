//! [`ChatError`]: a refusal or failure with the contract's code and a message safe to
//! show a client. The one mapping from [`StoreError`] to what clients see lives here;
//! the HTTP boundary and the sessions both go through it.

use chat_store::{ContactError, GroupRefusal, Refusal, StoreError};
use chat_wire::{DraftError, ErrorCode};

/// An operation refused or failed, with the contract's code. The message is safe to
/// show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ChatError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// Postgres could not be reached or failed; nothing was stored.
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "storage is unavailable, retry later",
        )
    }

    /// The node is draining or stopping: the client reconnects (to another node).
    pub fn draining() -> Self {
        Self::new(ErrorCode::Unavailable, "node is draining; reconnect")
    }

    pub fn not_member() -> Self {
        Self::new(
            ErrorCode::NotMember,
            "you are not a member of this conversation",
        )
    }

    pub fn conversation_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "conversation not found")
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                ChatError::new(ErrorCode::NotFound, format!("{what} not found"))
            }
            StoreError::Invalid(why) => ChatError::bad_request(why),
            StoreError::Forbidden(why) => ChatError::new(ErrorCode::Forbidden, why),
            StoreError::Conflict(what) => {
                ChatError::new(ErrorCode::Conflict, format!("{what} is taken"))
            }
            StoreError::Unavailable(_) | StoreError::Migration(_) | StoreError::NoDatabase(_) => {
                tracing::error!(error = %e, "store call failed");
                ChatError::unavailable()
            }
        }
    }
}

impl From<ContactError> for ChatError {
    fn from(e: ContactError) -> Self {
        let code = match &e {
            ContactError::Store(inner) => return inner.clone().into(),
            ContactError::ToSelf | ContactError::BlockSelf => ErrorCode::BadRequest,
            ContactError::UnknownUser | ContactError::NoSuchRequest | ContactError::NotContacts => {
                ErrorCode::NotFound
            }
            ContactError::AlreadyContacts
            | ContactError::AlreadyPending
            | ContactError::Answered(_) => ErrorCode::Conflict,
            ContactError::Blocked | ContactError::NotRecipient | ContactError::NotSender => {
                ErrorCode::Forbidden
            }
        };
        ChatError::new(code, e.to_string())
    }
}

impl From<Refusal> for ChatError {
    fn from(r: Refusal) -> Self {
        let code = match r {
            Refusal::BadReply | Refusal::WrongTarget | Refusal::Recalled => ErrorCode::BadRequest,
            Refusal::NotMember => ErrorCode::NotMember,
            Refusal::NoTarget => ErrorCode::NotFound,
            Refusal::Blocked
            | Refusal::NotSender
            | Refusal::EditWindowPassed
            | Refusal::RecallWindowPassed
            | Refusal::SystemOnly
            | Refusal::Muted(_) => ErrorCode::Forbidden,
        };
        ChatError::new(code, r.to_string())
    }
}

impl From<GroupRefusal> for ChatError {
    fn from(r: GroupRefusal) -> Self {
        let code = match &r {
            GroupRefusal::NoSuchConversation => ErrorCode::NotFound,
            GroupRefusal::NotMember => ErrorCode::NotMember,
            GroupRefusal::Forbidden(_) => ErrorCode::Forbidden,
            GroupRefusal::UnknownUser(_) | GroupRefusal::NotInGroup(_) => ErrorCode::NotFound,
            GroupRefusal::NotGroup | GroupRefusal::Invalid(_) => ErrorCode::BadRequest,
            GroupRefusal::TooMany(_) => ErrorCode::Conflict,
            GroupRefusal::Banned(_) => ErrorCode::Forbidden,
            GroupRefusal::NotBanned(_) => ErrorCode::NotFound,
        };
        ChatError::new(code, r.to_string())
    }
}

impl From<DraftError> for ChatError {
    fn from(e: DraftError) -> Self {
        ChatError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_contract_codes() {
        let cases = [
            (
                StoreError::NotFound("user"),
                ErrorCode::NotFound,
                "user not found",
            ),
            (
                StoreError::Conflict("username"),
                ErrorCode::Conflict,
                "username is taken",
            ),
            (StoreError::Invalid("bad"), ErrorCode::BadRequest, "bad"),
            (StoreError::Forbidden("no"), ErrorCode::Forbidden, "no"),
            (
                StoreError::Unavailable("connection refused to 10.0.0.1".into()),
                ErrorCode::Unavailable,
                "storage is unavailable, retry later",
            ),
        ];
        for (store, code, message) in cases {
            let e = ChatError::from(store);
            assert_eq!((e.code, e.message.as_str()), (code, message));
        }
    }

    #[test]
    fn draft_errors_keep_their_code() {
        let e = ChatError::from(DraftError::TooLarge(8));
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert_eq!(e.message, "body is larger than 8 bytes");
    }
}
