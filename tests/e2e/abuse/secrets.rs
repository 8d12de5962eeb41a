//! Abuse: secrets.
