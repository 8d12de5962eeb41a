//! OpenSSH `known_hosts` files: which ssh host keys the operator trusts, for which hosts.
//!
//! libgit2 checks a host key against `$HOME/.ssh/known_hosts` only when no callback decides; the
//! agent decides itself, from files the operator controls (`known_hosts:` in the app's `auth`, else
//! OpenSSH's defaults: the agent user's `~/.ssh/known_hosts` from the password database, not
//! `$HOME`, and `/etc/ssh/ssh_known_hosts`), so that a refusal can say which file to fix and how.
//!
//! Read as OpenSSH reads them: plain and hashed (`|1|salt|hash`) host names, `[host]:port` for a
//! port other than 22, `*`/`?` wildcards and `!` negations, `@revoked` lines. `@cert-authority`
//! lines are skipped (host certificates are not checked here): a host known only through one is
//! unknown. Lines that do not parse are skipped, like OpenSSH does.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// The files OpenSSH reads when none is configured: the user's, then the system's.
pub fn default_files() -> Vec<PathBuf> {
    let home = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/root"));
    vec![home.join(".ssh/known_hosts"), PathBuf::from("/etc/ssh/ssh_known_hosts")]
}

/// The entries of some known_hosts files.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    file: PathBuf,
    line: usize,
    revoked: bool,
    hosts: Hosts,
    /// The key as the wire format has it (what the `AAAA...` field decodes to).
    key: Vec<u8>,
}

#[derive(Debug)]
enum Hosts {
    /// `host,[host]:2222,*.example.com,!bad.example.com`, lowercased.
    Patterns(Vec<String>),
    /// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// What the files say about a host and the key it offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line names the host with this key.
    Trusted,
    /// No line names the host.
    Unknown,
    /// A line names the host with another key of the same type: the key changed, or someone is in
    /// the middle.
    Changed { file: PathBuf, line: usize },
    /// The host is known, but only with keys of other types than the one it offered.
    OtherTypes { known: Vec<String> },
    /// The key is marked `@revoked` for this host.
    Revoked { file: PathBuf, line: usize },
}

impl KnownHosts {
    /// Read `files` in order. A file that does not exist adds nothing (the host is then unknown);
    /// one that exists but cannot be read is an error.
    pub fn read(files: &[PathBuf]) -> std::io::Result<KnownHosts> {
        let mut known = KnownHosts::default();
        for file in files {
            match std::fs::read_to_string(file) {
                Ok(text) => known.add(file, &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(known)
    }

    fn add(&mut self, file: &Path, text: &str) {
        for (i, line) in text.lines().enumerate() {
            if let Some(entry) = parse_line(line) {
                self.entries.push(Entry { file: file.to_path_buf(), line: i + 1, ..entry });
            }
        }
    }

    /// What the files say about `host` on `port` offering the public key `key` (wire format).
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = host_name(host, port);
        let offered = key_type(key);
        let named: Vec<&Entry> = self.entries.iter().filter(|e| e.hosts.match_name(&name)).collect();
        if let Some(e) = named.iter().find(|e| e.revoked && e.key == key) {
            return Verdict::Revoked { file: e.file.clone(), line: e.line };
        }
        let trusted: Vec<&&Entry> = named.iter().filter(|e| !e.revoked).collect();
        if trusted.iter().any(|e| e.key == key) {
            return Verdict::Trusted;
        }
        if let Some(e) = trusted.iter().find(|e| offered.is_some() && key_type(&e.key) == offered) {
            return Verdict::Changed { file: e.file.clone(), line: e.line };
        }
        if trusted.is_empty() {
            return Verdict::Unknown;
        }
        let mut known: Vec<String> = trusted.iter().filter_map(|e| key_type(&e.key)).map(str::to_string).collect();
        known.dedup();
        Verdict::OtherTypes { known }
    }
}

/// The name a host is written under: `host` on port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// The key's type, as its wire format starts with it (`ssh-ed25519`).
pub fn key_type(key: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(key.get(4..4 + len)?).ok()
}

/// `SHA256:...`, the fingerprint `ssh-keygen -l` and `ssh` show.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(sha2::Sha256::digest(key)))
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut hosts = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = hosts.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            // `@cert-authority` and markers of later versions: not a plain host key.
            _ => return None,
        }
        hosts = fields.next()?;
    }
    let key_type_field = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    if key_type(&key) != Some(key_type_field) {
        return None;
    }
    let hosts = match hosts.strip_prefix("|1|") {
        Some(hashed) => {
            let (salt, hash) = hashed.split_once('|')?;
            Hosts::Hashed { salt: STANDARD.decode(salt).ok()?, hash: STANDARD.decode(hash).ok()? }
        }
        None => Hosts::Patterns(hosts.split(',').map(str::to_ascii_lowercase).collect()),
    };
    Some(Entry { file: PathBuf::new(), line: 0, revoked, hosts, key })
}

impl Hosts {
    fn match_name(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else { return false };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for p in patterns {
                    match p.strip_prefix('!') {
                        Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
                        Some(_) => {}
                        None => matched |= glob(p.as_bytes(), name.as_bytes()),
                    }
                }
                matched
            }
        }
    }
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` one character. Iterative, with one
/// backtrack point, so a hostile pattern cannot make it exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host key made with `ssh-keygen -t ed25519` (its fingerprint below).
    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJzbRqXrCO45nQ7YB2Qmxv6uSCichNtQpK88lW9JZRlN";
    const FINGERPRINT: &str = "SHA256:AxwVqmZhkO5JihgJAhHF2hRI2ESLYWheoJVUsXGVDKo";

    fn key() -> Vec<u8> {
        STANDARD.decode(KEY).unwrap()
    }

    /// Another ed25519 key: the same type, other bytes.
    fn other_key() -> Vec<u8> {
        let mut k = key();
        let last = k.len() - 1;
        k[last] ^= 1;
        k
    }

    fn b64(k: &[u8]) -> String {
        STANDARD.encode(k)
    }

    fn known(text: &str) -> KnownHosts {
        let mut k = KnownHosts::default();
        k.add(Path::new("/etc/deployer/known_hosts"), text);
        k
    }

    #[test]
    fn keys_have_a_type_and_a_fingerprint_like_ssh_keygen_shows() {
        assert_eq!(key_type(&key()), Some("ssh-ed25519"));
        assert_eq!(fingerprint(&key()), FINGERPRINT);
        assert_eq!(key_type(b"\0\0"), None);
        assert_eq!(key_type(b"\0\0\0\x09short"), None);
    }

    #[test]
    fn plain_names_match_by_host_and_port() {
        let k = known(&format!("git.example.com ssh-ed25519 {KEY}\n[git.example.com]:2222 ssh-ed25519 {KEY} c\n"));
        assert_eq!(k.check("git.example.com", 22, &key()), Verdict::Trusted);
        assert_eq!(k.check("GIT.example.com", 2222, &key()), Verdict::Trusted);
        assert_eq!(k.check("git.example.com", 2200, &key()), Verdict::Unknown);
        assert_eq!(k.check("example.com", 22, &key()), Verdict::Unknown);
    }

    #[test]
    fn hashed_names_written_by_ssh_keygen_match() {
        // `ssh-keygen -H` of the two lines of the test above.
        let k = known(&format!(
            "|1|P2mjOLx8BjPcRWqBWMvwkDqR4MU=|u5aA9UFYC6R+ODhH9EPeV7XL2X8= ssh-ed25519 {KEY}\n\
             |1|9q83Kxi4Op+3W23+Xe8Yp52q41s=|YSX/zb4BiEP7GNFY9RoPphMZjOk= ssh-ed25519 {KEY}\n"
        ));
        assert_eq!(k.check("git.example.com", 2222, &key()), Verdict::Trusted);
        assert_eq!(k.check("git.example.com", 22, &key()), Verdict::Trusted);
        assert_eq!(k.check("git.example.org", 22, &key()), Verdict::Unknown);
    }

    #[test]
    fn a_different_key_of_the_same_type_is_a_change() {
        let k = known(&format!("# comment\n\ngit.example.com ssh-ed25519 {KEY}\n"));
        assert_eq!(
            k.check("git.example.com", 22, &other_key()),
            Verdict::Changed { file: "/etc/deployer/known_hosts".into(), line: 3 }
        );
    }

    #[test]
    fn a_host_known_with_other_key_types_only_says_which() {
        let rsa = [&7u32.to_be_bytes()[..], b"ssh-rsa", b"\0\0\0\x01\x03"].concat();
        let k = known(&format!("git.example.com ssh-rsa {}\n", b64(&rsa)));
        assert_eq!(k.check("git.example.com", 22, &key()), Verdict::OtherTypes { known: vec!["ssh-rsa".into()] });
    }

    #[test]
    fn wildcards_negations_and_revocations() {
        let k = known(&format!(
            "*.example.com,!bad.example.com ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {}\n",
            b64(&other_key())
        ));
        assert_eq!(k.check("git.example.com", 22, &key()), Verdict::Trusted);
        assert_eq!(k.check("bad.example.com", 22, &key()), Verdict::Unknown);
        assert_eq!(
            k.check("git.example.com", 22, &other_key()),
            Verdict::Revoked { file: "/etc/deployer/known_hosts".into(), line: 2 }
        );
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(glob(b"[git?.example.com]:22*", b"[git1.example.com]:2222"));
        assert!(!glob(b"a*b", b"aXXc"));
        assert!(!glob(b"", b"a"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn lines_that_do_not_parse_and_cert_authorities_are_skipped() {
        let k = known(&format!(
            "git.example.com\ngit.example.com ssh-ed25519 !!notbase64\ngit.example.com ssh-rsa {KEY}\n\
             @cert-authority git.example.com ssh-ed25519 {KEY}\n"
        ));
        assert_eq!(k.check("git.example.com", 22, &key()), Verdict::Unknown);
    }

    #[test]
    fn missing_files_add_nothing_and_host_names_follow_openssh() {
        let k = KnownHosts::read(&["/nonexistent/known_hosts".into()]).unwrap();
        assert_eq!(k.check("h", 22, &key()), Verdict::Unknown);
        assert_eq!(host_name("Git.Example.com", 22), "git.example.com");
        assert_eq!(host_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(host_name("[::1]", 2222), "[::1]:2222");
        assert!(default_files()[0].ends_with(".ssh/known_hosts"));
    }
}
