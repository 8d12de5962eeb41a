//! Abuse: the CLI trusts a repository's `deployer.yaml` with no token, and prints remote text safely.
