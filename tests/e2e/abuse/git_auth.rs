//! Abuse: git_auth.
