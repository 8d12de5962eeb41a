//! How a fetch proves who it is to the remote (an https token, an ssh key), and how it knows the
//! remote is the right one (the ssh host key, checked against known_hosts files).
//!
//! libgit2 asks for credentials again after each refusal, forever if it is let: each credential is
//! offered once, so a wrong token or key costs one refused attempt per fetch, not a storm of them.
//! The secret never leaves this module except to libgit2: `GitAuth`'s `Debug` hides it, and every
//! message from libgit2 passes [`Source::scrub`] first.

use super::known_hosts::{self, KnownHosts, Verdict};
use super::{Source, SourceError};
use git2::{CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, ProxyOptions, RemoteCallbacks};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::PathBuf;

/// Credentials for the app's repository. The `Debug` output hides the secret and the key's path.
#[derive(Clone, PartialEq, Eq)]
pub enum GitAuth {
    /// An https access token (GitHub, GitLab, Gitea), sent as the password of the URL's user, or
    /// of `x-access-token`.
    Token(String),
    /// A private key file for ssh URLs (no passphrase: the agent runs unattended), and the
    /// known_hosts file that says which host keys to trust (OpenSSH's default files when `None`).
    SshKey { key: PathBuf, known_hosts: Option<PathBuf> },
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitAuth::Token(_) => f.write_str("Token(***)"),
            GitAuth::SshKey { known_hosts, .. } => {
                f.debug_struct("SshKey").field("key", &"***").field("known_hosts", known_hosts).finish()
            }
        }
    }
}

/// The state of one conversation with the remote (a fetch, an ls-remote): which credentials were
/// offered, and why a host key was refused (libgit2 replaces the callback's message with its own).
#[derive(Default)]
pub(super) struct Attempt {
    asked_user: Cell<bool>,
    offered_secret: Cell<bool>,
    refused_host: RefCell<Option<HostKeyRefusal>>,
}

/// Why the ssh server's host key was not accepted, in words for the deploy's error.
#[derive(Debug, Clone)]
pub(super) struct HostKeyRefusal {
    pub message: String,
    pub hint: String,
}

impl Source {
    /// Callbacks that answer libgit2's credential requests from `auth`, each credential once, and
    /// decide on ssh host keys from the known_hosts files.
    pub(super) fn callbacks<'a>(&'a self, attempt: &'a Attempt) -> RemoteCallbacks<'a> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, user_from_url, allowed| {
            let ssh_user = user_from_url.unwrap_or("git");
            // libssh2 needs a user name before it can list the ways to log in.
            if allowed == CredentialType::USERNAME {
                if attempt.asked_user.replace(true) {
                    return Err(auth_error("the remote refused the user name"));
                }
                return Cred::username(ssh_user);
            }
            if attempt.offered_secret.replace(true) {
                return Err(auth_error(match &self.auth {
                    Some(GitAuth::Token(_)) => "the remote refused the token",
                    Some(GitAuth::SshKey { .. }) => "the remote refused the ssh key",
                    None => "the remote refused the ssh agent's keys",
                }));
            }
            match &self.auth {
                Some(GitAuth::Token(token)) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                    Cred::userpass_plaintext(user_from_url.unwrap_or("x-access-token"), token)
                }
                Some(GitAuth::SshKey { key, .. }) if allowed.contains(CredentialType::SSH_KEY) => {
                    Cred::ssh_key(ssh_user, None, key, None)
                }
                None if allowed.contains(CredentialType::SSH_KEY) => Cred::ssh_key_from_agent(ssh_user),
                _ => Err(auth_error("the remote asks for credentials that are not configured")),
            }
        });
        callbacks.certificate_check(move |cert, host| {
            // An https certificate: libgit2 checks it against the system's roots, as it should.
            let Some(hostkey) = cert.as_hostkey() else { return Ok(CertificateCheckStatus::CertificatePassthrough) };
            match self.check_host_key(host, hostkey.hostkey()) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(refusal) => {
                    let error = git2::Error::new(ErrorCode::Certificate, ErrorClass::Ssh, refusal.message.as_str());
                    *attempt.refused_host.borrow_mut() = Some(refusal);
                    Err(error)
                }
            }
        });
        callbacks
    }

    /// Honour `https_proxy`, `http_proxy` and git's own proxy settings, except for a token over
    /// plain http (to loopback, the only place config checks let one go): a proxy would read it.
    pub(super) fn proxy(&self) -> ProxyOptions<'static> {
        let mut proxy = ProxyOptions::new();
        let plain_http = matches!(transport(&self.url), Transport::Http { tls: false, .. });
        if !(plain_http && matches!(self.auth, Some(GitAuth::Token(_)))) {
            proxy.auto();
        }
        proxy
    }

    /// Is `key`, offered by `host` on the URL's port, one the known_hosts files trust for it?
    fn check_host_key(&self, host: &str, key: Option<&[u8]>) -> Result<(), HostKeyRefusal> {
        let port = ssh_port(&self.url);
        let name = known_hosts::host_name(host, port);
        let configured = match &self.auth {
            Some(GitAuth::SshKey { known_hosts: Some(file), .. }) => Some(file.clone()),
            _ => None,
        };
        let files = configured.clone().map_or_else(known_hosts::default_files, |f| vec![f]);
        // The file a hint tells to edit: the configured one, else the agent user's.
        let file = files[0].display().to_string();
        let shown = files.iter().map(|f| format!("`{}`", f.display())).collect::<Vec<_>>().join(" and ");
        let scan = if port == 22 { format!("ssh-keyscan {host}") } else { format!("ssh-keyscan -p {port} {host}") };
        let add = format!(
            "if `{name}` is your git server, add its host keys: `{scan} >> {file}`, then compare the fingerprints \
             (`ssh-keygen -lf {file}`) with the ones the git host publishes{}",
            if configured.is_some() { "" } else { " (or name another file with `known_hosts:` in the app's `auth`)" }
        );
        let Some(key) = key else {
            return Err(HostKeyRefusal {
                message: format!("the ssh server `{name}` sent no host key that can be checked"),
                hint: add,
            });
        };
        let known = KnownHosts::read(&files).map_err(|e| HostKeyRefusal {
            message: format!("cannot read the known_hosts files {shown}: {e}"),
            hint: "the agent must be able to read the files its app's `auth.known_hosts` names".into(),
        })?;
        let offered =
            format!("{} {}", known_hosts::key_type(key).unwrap_or("unknown-type"), known_hosts::fingerprint(key));
        match known.check(host, port, key) {
            Verdict::Trusted => Ok(()),
            Verdict::Unknown => Err(HostKeyRefusal {
                message: format!("the ssh host key of `{name}` ({offered}) is unknown: it is not in {shown}"),
                hint: add,
            }),
            Verdict::OtherTypes { known } => Err(HostKeyRefusal {
                message: format!(
                    "the ssh host key of `{name}` ({offered}) is not in {shown}, which know it only with {} keys",
                    known.join(", ")
                ),
                hint: add,
            }),
            Verdict::Changed { file, line } => Err(HostKeyRefusal {
                message: format!(
                    "the ssh host key of `{name}` CHANGED: it offered {offered}, but line {line} of `{}` holds another key \
                     of that type",
                    file.display()
                ),
                hint: format!(
                    "someone may be intercepting the connection; if the server's key really changed, remove the old \
                     line (`ssh-keygen -R '{name}' -f {}`) and add the new key (`{scan} >> {}`)",
                    file.display(),
                    file.display()
                ),
            }),
            Verdict::Revoked { file, line } => Err(HostKeyRefusal {
                message: format!(
                    "the ssh host key of `{name}` ({offered}) is marked `@revoked` on line {line} of `{}`",
                    file.display()
                ),
                hint: "the server uses a key that was revoked: do not fetch from it until it has a new one".into(),
            }),
        }
    }

    /// A libgit2 message with the URL redacted and the token or key path, should they appear,
    /// masked.
    pub(super) fn scrub(&self, message: &str) -> String {
        let message = message.replace(&self.url, &self.display_url());
        match &self.auth {
            Some(GitAuth::Token(token)) if !token.is_empty() => message.replace(token.as_str(), "***"),
            Some(GitAuth::SshKey { key, .. }) if !key.as_os_str().is_empty() => {
                message.replace(&*key.to_string_lossy(), "<ssh key>")
            }
            _ => message,
        }
    }

    /// The deploy's error for a fetch that failed: a refused host key says why and what to do.
    pub(super) fn attempt_error(&self, e: git2::Error, attempt: &Attempt) -> SourceError {
        match attempt.refused_host.take() {
            Some(refusal) => SourceError::HostKey {
                url: self.display_url(),
                branch: self.branch.clone(),
                message: refusal.message,
                hint: refusal.hint,
            },
            None => self.fetch_error(e),
        }
    }
}

fn auth_error(message: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Net, message)
}

/// The port of an ssh URL: `ssh://[user@]host:port/path`, else 22 (scp-like `user@host:path`).
pub fn ssh_port(url: &str) -> u16 {
    let Some(rest) = ["ssh://", "git+ssh://", "ssh+git://"].iter().find_map(|s| url.strip_prefix(s)) else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// How a URL reaches its repository, as far as credentials care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `http://` or `https://`: a token goes in an `Authorization` header.
    Http { tls: bool, host: String },
    /// `ssh://` or scp-like `user@host:path`: a key, and the server's host key checked.
    Ssh,
    /// A path or `file://`: no credentials.
    Local,
}

/// The transport of a repository URL.
pub fn transport(url: &str) -> Transport {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        return match scheme.to_ascii_lowercase().as_str() {
            "http" => Transport::Http { tls: false, host: host.to_ascii_lowercase() },
            "https" => Transport::Http { tls: true, host: host.to_ascii_lowercase() },
            "file" => Transport::Local,
            _ => Transport::Ssh,
        };
    }
    let scp_like = url.split_once(':').is_some_and(|(host, _)| !host.contains('/') && !host.is_empty());
    if scp_like { Transport::Ssh } else { Transport::Local }
}

/// Whether `host` (as a URL names it) is this machine's loopback, where plain http stays local.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_ports_come_from_the_url() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/srv/app.git"), 2222);
        assert_eq!(ssh_port("ssh://[::1]:2200/srv/app.git"), 2200);
        assert_eq!(ssh_port("ssh://git@host/srv/app.git"), 22);
        assert_eq!(ssh_port("git@github.com:acme/web.git"), 22);
        assert_eq!(ssh_port("git+ssh://host:23/x"), 23);
    }

    #[test]
    fn transports_are_told_apart() {
        assert_eq!(transport("https://github.com/a/b.git"), Transport::Http { tls: true, host: "github.com".into() });
        assert_eq!(
            transport("http://x-access-token@127.0.0.1:8080/app.git"),
            Transport::Http { tls: false, host: "127.0.0.1".into() }
        );
        assert_eq!(transport("http://[::1]:80/a"), Transport::Http { tls: false, host: "::1".into() });
        assert_eq!(transport("ssh://git@host:22/a"), Transport::Ssh);
        assert_eq!(transport("git@github.com:acme/web.git"), Transport::Ssh);
        assert_eq!(transport("/srv/git/app.git"), Transport::Local);
        assert_eq!(transport("file:///srv/git/app.git"), Transport::Local);
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("[::1]") && is_loopback("LOCALHOST"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("git.example.com") && !is_loopback("localhost.evil.com"));
    }

    #[test]
    fn the_key_path_and_token_stay_out_of_debug() {
        let auth = GitAuth::SshKey { key: "/etc/deployer/secret_key".into(), known_hosts: None };
        assert!(!format!("{auth:?}").contains("secret_key"), "{auth:?}");
        assert_eq!(format!("{:?}", GitAuth::Token("s3cret".into())), "Token(***)");
    }
}
