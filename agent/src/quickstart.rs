//! `deployer-agent quickstart`: the whole product on a fresh machine with nothing but this repo.
//!
//! It creates a local git repository holding the example app, an agent config that deploys it
//! from that repository in pull mode, and runs the agent. Commit a change to the repository and
//! the agent fetches it, builds a release and rolls the workers over without failing a request.

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const APP_JS: &str = include_str!("../../examples/hello-node/app.js");
const PACKAGE_JSON: &str = include_str!("../../examples/hello-node/package.json");

pub struct Quickstart {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub token: String,
    pub port: u16,
    pub api: String,
}

/// Create (or reuse) the quick-start directory. Answers what to run and what to tell the user.
pub fn prepare(dir: &Path, port: u16, api_port: u16) -> anyhow::Result<Quickstart> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let repo_dir = dir.join("app");
    if !repo_dir.join(".git").exists() {
        std::fs::create_dir_all(&repo_dir)?;
        std::fs::write(repo_dir.join("app.js"), APP_JS)?;
        std::fs::write(repo_dir.join("package.json"), PACKAGE_JSON)?;
        std::fs::write(repo_dir.join(".gitignore"), "node_modules/\n")?;
        commit_all(&repo_dir, "The example app").context("cannot create the quick-start git repository")?;
    }
    let token_file = dir.join(".token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_string(),
        _ => {
            let t = random_token()?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&token_file)
                .and_then(|mut f| f.write_all(t.as_bytes()))?;
            t
        }
    };
    // Only its owner may read the token (a file from an older quickstart was 0644).
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    let config = dir.join("agent.yaml");
    if !config.exists() {
        std::fs::write(
            &config,
            format!(
                "# Written by `deployer-agent quickstart`. Paths are relative to this file.
listen: 127.0.0.1:{api_port}
state_dir: state
tokens:
  - {{ name: admin, token_env: DEPLOYER_TOKEN, scopes: [read, deploy] }}
apps:
  web:
    repo: app                 # the local git repository next to this file
    branch: main
    poll: 2s                  # pull mode: deploy when the branch moves
    start: node app.js
    instances: 2
    port: {port}
    env: {{ DELAY_MS: \"200\" }}
    keep_releases: 5
"
            ),
        )?;
    }
    Ok(Quickstart { dir, config, token, port, api: format!("http://127.0.0.1:{api_port}") })
}

impl Quickstart {
    pub fn instructions(&self) -> String {
        let d = self.dir.display();
        format!(
            "\n  deployer quick start\n\n  \
             The agent deploys the git repository {d}/app (branch main) to 2 workers behind\n  \
             http://127.0.0.1:{port}/ and checks the branch every 2 s.\n\n  \
             In another terminal:\n    \
             export DEPLOYER_TOKEN={token} DEPLOYER_AGENT={api}\n    \
             curl 127.0.0.1:{port}/\n    \
             python3 bench/loadcheck.py --port {port} --seconds 30 &          # counts failed requests\n    \
             sed -i 's/hello/bonjour/' {d}/app/app.js && git -C {d}/app commit -qam 'Say bonjour'\n    \
             cargo run -q -p deployer -- history web                        # the deploy, step by step\n    \
             cargo run -q -p deployer -- rollback web --wait                 # back, no fetch, no install\n\n",
            port = self.port,
            token = self.token,
            api = self.api,
        )
    }
}

fn commit_all(repo_dir: &Path, message: &str) -> Result<(), git2::Error> {
    let repo = git2::Repository::init_opts(repo_dir, git2::RepositoryInitOptions::new().initial_head("main"))?;
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("deployer quickstart", "quickstart@deployer.invalid")?;
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[])?;
    Ok(())
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}
