//! Abuse: files.
