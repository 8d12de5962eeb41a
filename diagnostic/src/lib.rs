//! Mistakes in the YAML files people write (`agent.yaml`, `deployer.yaml`, env files), reported
//! the same way everywhere: `file:line:col: message`, then a `hint:` saying what to write instead.
//!
//! [`FileError`] is the located mistake; [`FileError::from_yaml`] turns a serde error into one,
//! with a "did you mean" for misspelt keys; [`locate`] finds a key in the text for checks made
//! after parsing (serde keeps no spans). The hints that name a program's own files and flags stay
//! in that program.
//!
//! The crate is pure (no I/O beyond formatting an `io::Error` it is given), so the CLI can share
//! it with the agent without building the agent.

mod file_error;
pub mod locate;
mod suggest;

pub use file_error::FileError;
