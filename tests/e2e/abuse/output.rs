//! Abuse: output.
