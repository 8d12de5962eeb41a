//! Abuse: trees.
