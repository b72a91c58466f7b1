//! The Redis side of the quota engine and conversations: key names, and the typed contract of
//! the `reserve_v1` and `settle_v1` scripts (KEYS and ARGV built, replies decoded) in pure Rust.
//!
//! Layout: [`keys`] names every Redis key; `reserve` and `settle` each hold one script's KEYS
//! builder, ARGV writer (a JSON object built with `json::object`) and reply readers (those of
//! `reserve_v1` in `reserve_reply`); `contract` holds the cjson decoding rules they share: the
//! reply is parsed once into a `Value` and read through the non-generic `contract::Fields`, not
//! derived `Deserialize` impls (one monomorphized decoder per shape cost the wasm tens of KB);
//! [`upstash`] speaks the REST protocol.
//! `core/tests/lua_contract.rs` runs both scripts on a real Redis through these functions.

pub(crate) mod contract;
pub mod keys;
mod reserve;
mod reserve_reply;
mod settle;
pub mod upstash;

pub use reserve::{parse_reserve, reserve_call, reserve_keys, Bucket, BudgetSpec, ConvLock, Reservation, ReserveSpec};
pub use settle::{parse_settle, settle_call, settle_keys, BudgetSettle, ConvSettle, CooldownSpec, SettleSpec, Settled};

use crate::store::upstash::Script;

/// `pacific.lua` is a prelude of helpers, prepended to each script so one EVAL carries both.
pub static RESERVE: Script =
    Script::new("reserve_v1", concat!(include_str!("lua/pacific.lua"), include_str!("lua/reserve_v1.lua")));
pub static SETTLE: Script =
    Script::new("settle_v1", concat!(include_str!("lua/pacific.lua"), include_str!("lua/settle_v1.lua")));
