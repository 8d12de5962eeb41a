//! Abuse: perms.
