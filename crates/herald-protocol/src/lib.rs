//! Everything both sides of a Herald connection agree on, with no I/O.
//!
//! This crate owns the wire format (the JSON frames of WebSocket protocol v1 and the bodies of the
//! publisher HTTP API), the catalogue of agent events with their data rules, and the run state
//! machine. The server, the Rust client, `herald check` and `herald bench` all speak the protocol
//! through these types, so there is one definition of it.
//!
//! It must never depend on tokio, sockets or clocks: validation here is a pure function of its
//! input, which is what makes it cheap to test and to fuzz.

pub mod agui;
pub mod compact;
pub mod data;
pub mod event;
pub mod frame;
pub mod publish;
pub mod publish_socket;
pub mod run;
pub mod unique_keys;
pub mod user;

pub use data::EventData;
pub use event::EventKind;
pub use frame::{ClientFrame, ClientFrameError, CloseCode, Recovery, ServerFrame};
pub use publish::{
    ApiError, BatchError, EventInput, FieldError, PublishBatch, PublishBody, Receipt, Receipts, WireEvent,
};
pub use publish_socket::{AnswerError, FrameError, Outcome, PublishAnswer, PublishFrame};
pub use run::{RunRuleError, RunState};
pub use user::{UserId, UserIdError};

/// The protocol version announced in the `welcome` frame (`"v":1`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol the server selects when the client offers it.
pub const SUBPROTOCOL: &str = "herald.v1";

/// Prefix of the subprotocol that carries a JWT for clients that cannot set headers (browsers).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";
