//! The abuse suite: one test per attack on the agent's trust boundary (issue 9). The attacker
//! controls a repository's content or an app's code (workers as `nobody`); each test asserts
//! that nothing leaks, nothing outside the app directory changes (a [`deployer_tests::Decoy`]),
//! and the other apps on the same agent keep serving (a [`deployer_tests::Bystander`]).

mod cli;
mod edge_attacks;
mod files;
mod git_auth;
mod output;
mod perms;
mod review;
mod secrets;
mod trees;
