//! `user:` — the account an app's workers and its install steps run as, looked up when the config
//! is loaded. The agent itself keeps running as root (it owns the ports and the state dir) and
//! drops to this account in each child it starts.

use nix::unistd::{Uid, User};
use std::path::PathBuf;

/// `user:` names no account this host can find.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error("there is no user `{0}` on this host")]
    NoSuchUser(String),
    #[error("cannot look up user `{spec}`: {source}")]
    Lookup { spec: String, source: nix::Error },
}

/// A user account of this host, as a child process is started with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// Look up `spec`: a user name, or a numeric uid.
    pub fn resolve(spec: &str) -> Result<RunAs, RunAsError> {
        let found = match spec.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(spec),
        };
        match found {
            Ok(Some(u)) => Ok(RunAs { user: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }),
            Ok(None) => Err(RunAsError::NoSuchUser(spec.to_string())),
            Err(source) => Err(RunAsError::Lookup { spec: spec.to_string(), source }),
        }
    }

    /// Whether this process may start children as this user: it is root, or it is that user.
    pub fn can_switch(&self) -> bool {
        let me = nix::unistd::geteuid();
        me.is_root() || me.as_raw() == self.uid
    }

    /// `USER`, `LOGNAME` and `HOME` of the account, for the child's environment.
    pub fn env(&self) -> [(String, String); 3] {
        [
            ("USER".into(), self.user.clone()),
            ("LOGNAME".into(), self.user.clone()),
            ("HOME".into(), self.home.display().to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::RunAs;

    #[test]
    fn users_are_found_by_name_or_uid() {
        let root = RunAs::resolve("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(RunAs::resolve("0").expect("uid 0"), root);
        let err = RunAs::resolve("no-such-user-here").expect_err("unknown");
        assert!(err.to_string().contains("no user `no-such-user-here`"), "{err}");
    }
}
