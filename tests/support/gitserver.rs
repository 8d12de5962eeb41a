//! Real git servers on loopback that a test starts in a temp dir, for fetches with credentials:
//! smart HTTP behind basic auth (Debian's `nginx-light` + `fcgiwrap` + git's own
//! `git-http-backend`), and OpenSSH's `sshd` with a deploy key. Each serves one [`TestRepo`]
//! read-only, logs every request it gets (so a test can count them), and stops when dropped.
//!
//! The ssh server lets the deploy key run exactly `git-upload-pack <repo>` (`restrict` and a forced
//! `command=` in `authorized_keys`; root may log in only that way), so a test that runs as root
//! opens no shell on the machine.

use crate::repo::TestRepo;
use crate::wait_until;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// How long a server may take to listen.
const STARTUP: Duration = Duration::from_secs(15);

/// The user a token is sent for (the agent's default for https).
pub const TOKEN_USER: &str = "x-access-token";

/// Whether the servers' programs are installed (`.ci/run` installs them).
pub fn git_servers_installed() -> bool {
    ["/usr/sbin/nginx", "/usr/sbin/fcgiwrap", "/usr/sbin/sshd", "/usr/lib/git-core/git-http-backend"]
        .iter()
        .all(|p| Path::new(p).exists())
}

/// A smart-HTTP git server: `GET /app.git/info/refs` and `POST /app.git/git-upload-pack`, each
/// behind `auth_basic` that accepts user [`TOKEN_USER`] with the token as its password.
pub struct GitHttpServer {
    dir: TempDir,
    port: u16,
    nginx: Child,
    fcgiwrap: Child,
}

impl GitHttpServer {
    /// Serve `repo` (as it is now and after later commits) at [`GitHttpServer::url`].
    pub fn start(repo: &TestRepo, token: &str) -> GitHttpServer {
        let dir = tempfile::Builder::new().prefix("deployer-githttp-").tempdir().expect("a temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("the project root");
        std::os::unix::fs::symlink(repo.path().join(".git"), root.join("app.git")).expect("link the repository");
        // nginx's `{PLAIN}` scheme: the file is the test's, in its private temp dir.
        std::fs::write(dir.path().join("htpasswd"), format!("{TOKEN_USER}:{{PLAIN}}{token}\n")).expect("htpasswd");
        let socket = dir.path().join("fcgi.sock");
        let mut fcgiwrap = Command::new("/usr/sbin/fcgiwrap")
            .arg("-s")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log_file(dir.path(), "fcgiwrap.log"))
            .stderr(log_file(dir.path(), "fcgiwrap.log"))
            .spawn()
            .expect("start fcgiwrap (apt-get install fcgiwrap)");
        assert!(wait_until(STARTUP, || socket.exists()), "fcgiwrap did not create {}", socket.display());
        for _ in 0..5 {
            let port = crate::process::free_port();
            std::fs::write(dir.path().join("nginx.conf"), nginx_conf(dir.path(), port, &root, &socket))
                .expect("nginx.conf");
            let mut nginx = Command::new("/usr/sbin/nginx")
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(log_file(dir.path(), "error.log"))
                .stderr(log_file(dir.path(), "error.log"))
                .spawn()
                .expect("start nginx (apt-get install nginx-light)");
            let listening = wait_until(STARTUP, || {
                TcpStream::connect(("127.0.0.1", port)).is_ok() || nginx.try_wait().ok().flatten().is_some()
            }) && nginx.try_wait().ok().flatten().is_none();
            if listening {
                return GitHttpServer { dir, port, nginx, fcgiwrap };
            }
            // Another test took the port between the pick and the bind: pick again.
            let _ = nginx.kill();
            let _ = nginx.wait();
        }
        let _ = fcgiwrap.kill();
        let _ = fcgiwrap.wait();
        panic!("nginx did not start; its log:\n{}", read(dir.path(), "error.log"));
    }

    /// `http://127.0.0.1:<port>/app.git`, no credentials in it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/app.git", self.port)
    }

    /// The request lines nginx logged so far, one per request: `"GET /app.git/info/refs?... HTTP/1.1" 401`.
    pub fn requests(&self) -> Vec<String> {
        read(self.dir.path(), "access.log").lines().map(str::to_string).collect()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.fcgiwrap] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- nginx access log ---\n{}", read(self.dir.path(), "access.log"));
            eprintln!("--- nginx error log ---\n{}", read(self.dir.path(), "error.log"));
        }
    }
}

fn nginx_conf(dir: &Path, port: u16, root: &Path, socket: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  log_format git '$remote_user \"$request\" $status';
  access_log {d}/access.log git;
  client_body_temp_path {d}/tmp_body;
  fastcgi_temp_path {d}/tmp_fastcgi;
  proxy_temp_path {d}/tmp_proxy;
  uwsgi_temp_path {d}/tmp_uwsgi;
  scgi_temp_path {d}/tmp_scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_basic \"git\";
      auth_basic_user_file {d}/htpasswd;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT {root};
      fastcgi_param GIT_HTTP_EXPORT_ALL \"\";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_pass unix:{socket};
    }}
  }}
}}
",
        root = root.display(),
        socket = socket.display(),
    )
}

/// An OpenSSH server that lets one deploy key fetch one repository.
pub struct GitSshServer {
    dir: TempDir,
    port: u16,
    user: String,
    repo: PathBuf,
    sshd: Child,
}

impl GitSshServer {
    /// Serve `repo` to [`GitSshServer::deploy_key`] on a loopback port, with a host key of its own.
    pub fn start(repo: &TestRepo) -> GitSshServer {
        let dir = tempfile::Builder::new().prefix("deployer-gitssh-").tempdir().expect("a temp dir");
        for name in ["host_key", "deploy_key", "wrong_key"] {
            keygen(&dir.path().join(name));
        }
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .expect("the test's own user name");
        let repo_path = repo.path().to_path_buf();
        let deploy_pub = read(dir.path(), "deploy_key.pub");
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("restrict,command=\"git-upload-pack '{}'\" {deploy_pub}", repo_path.display()),
        )
        .expect("authorized_keys");
        if nix::unistd::geteuid().is_root() {
            // sshd's privilege separation directory, which its init script would create.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        for _ in 0..5 {
            let port = crate::process::free_port();
            std::fs::write(dir.path().join("sshd_config"), sshd_config(dir.path(), port, &user)).expect("sshd_config");
            let mut sshd = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(log_file(dir.path(), "sshd.log"))
                .stderr(log_file(dir.path(), "sshd.log"))
                .spawn()
                .expect("start sshd (apt-get install openssh-server)");
            let listening = wait_until(STARTUP, || {
                read(dir.path(), "sshd.log").contains(&format!("Server listening on 127.0.0.1 port {port}"))
                    || sshd.try_wait().ok().flatten().is_some()
            }) && sshd.try_wait().ok().flatten().is_none();
            if listening {
                return GitSshServer { dir, port, user, repo: repo_path, sshd };
            }
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        panic!("sshd did not start; its log:\n{}", read(dir.path(), "sshd.log"));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://<user>@127.0.0.1:<port><repo path>`.
    pub fn url(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, self.repo.display())
    }

    /// The private key the server accepts (mode 0600, as `ssh-keygen` writes it).
    pub fn deploy_key(&self) -> PathBuf {
        self.dir.path().join("deploy_key")
    }

    /// A private key the server does not know.
    pub fn wrong_key(&self) -> PathBuf {
        self.dir.path().join("wrong_key")
    }

    /// A known_hosts line for this server's host key: `[127.0.0.1]:<port> ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        self.line_for("host_key.pub")
    }

    /// A known_hosts line that names this server with another key of the same type (as if its
    /// key had changed, or someone were in the middle).
    pub fn changed_known_hosts_line(&self) -> String {
        self.line_for("wrong_key.pub")
    }

    fn line_for(&self, public_key: &str) -> String {
        let public = read(self.dir.path(), public_key);
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}\n", self.port, key.join(" "))
    }

    /// What sshd logged so far (`LogLevel VERBOSE`: one `Connection from` line per connection,
    /// a `Failed publickey` line per refused key).
    pub fn log(&self) -> String {
        read(self.dir.path(), "sshd.log")
    }
}

impl Drop for GitSshServer {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", self.log());
        }
    }
}

fn sshd_config(dir: &Path, port: u16, user: &str) -> String {
    let d = dir.display();
    format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin forced-commands-only
UsePAM no
AllowUsers {user}
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
LogLevel VERBOSE
"
    )
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (apt-get install openssh-client)");
    assert!(out.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).expect("a log file")
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}
