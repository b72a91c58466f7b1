//! Fakes of the engine's ports, for native tests of the request path (here and in other
//! crates, behind the `testing` feature): an in-memory quota store that models admission and
//! records every spec, a scripted upstream that records every call, a manual clock, and
//! secrets from a map. Real Google bodies to script with are in [`bodies`].
//!
//! Fakes panic on misuse (an unscripted upstream call): that is a failed test, never a
//! production path.

pub mod bodies;
mod runtime;
mod store;
mod upstream;

pub use runtime::{FakeClock, FakeRuntime, FakeSecrets};
pub use store::{ConvSettleRecord, FakeConversation, FakeStore, ReserveRecord, SettleRecord};
pub use upstream::{Answer, FakeStream, FakeUpstream, StreamEnd, UpstreamCall};
