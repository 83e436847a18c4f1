//! The production-run domain: typed values and the run state machine. Free of HTTP and SQL; the
//! store ([`crate::store`]) reads and writes what it decides, the handlers ([`crate::runs`]) only
//! translate.

pub mod machine_state;
pub mod run;
pub mod spc;
pub mod values;

pub use run::{
    decide, event, start, Command, DomainError, Downtime, Effect, Ending, EventDraft, Reason, Run,
    RunState, RunStatus, Start, Transition,
};
pub use values::{Count, CycleTime, Ident, Note, Seconds, ValueError};
