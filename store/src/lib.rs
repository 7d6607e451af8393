//! The Postgres store of the chat node.
//!
//! This crate is the only code that speaks SQL: [`queries`] holds every statement,
//! [`Store`] runs them on a deadpool pool with prepared (cached) statements, and
//! [`migrate`] applies the numbered migrations in `sql/` at start.

mod error;
mod migrate;
pub mod partitions;
mod queries;
mod retention;
mod store;

pub use error::StoreError;
pub use retention::Retention;
pub use store::{
    Appended, Membership, NewMessage, NewUser, ReadOutcome, Store, StoreConfig, UserAuth,
    UserRecord,
};
