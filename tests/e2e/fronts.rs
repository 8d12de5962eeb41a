//! The fronts other than `http`: `tcp` (layer 4) and `fd` (the socket handed to the workers).

use crate::reload::reload_under_load;
use deployer_tests::{Proxy, TestEnv, environ, http};

#[test]
fn tcp_front_serves_and_reloads_with_no_failed_connection_per_request_client() {
    let agent = TestEnv::new().proxy(Proxy::Tcp).start();
    assert_eq!(agent.app("web").mode, "tcp");
    let (_, report) = reload_under_load(&agent, false);
    assert_eq!(report.failed, 0, "{report}");
}

/// In `fd` mode the workers share the listening socket, so the agent cannot drain one worker
/// before signalling it: connections queued on a dying worker can fail. That is the documented
/// limit of the mode, so only serving before and after a reload is asserted here.
#[test]
fn fd_front_hands_the_socket_to_the_workers_and_serves_across_a_reload() {
    let agent = TestEnv::new().proxy(Proxy::Fd).start();
    let port = agent.port("web");
    let workers = agent.wait_online("web", 2);
    for w in &workers {
        assert_eq!(w.port, None, "fd workers have no private port");
        let env = environ(w.pid.expect("a pid"));
        assert!(env.iter().any(|(k, v)| k == "LISTEN_FDS" && v == "1"), "worker {} has no LISTEN_FDS=1", w.id);
        assert!(
            env.iter().any(|(k, v)| k == "LISTEN_PID" && *v == w.pid.expect("a pid").to_string()),
            "LISTEN_PID is not the worker's pid"
        );
    }
    let before = http::get(port, "/").expect("GET / before the reload");
    assert_eq!(before.status, 200, "{}", before.body);

    let r = agent.reload("web", false);
    assert_eq!(r.status, 200, "{}", r.body);
    let after_pids = agent.pids("web");
    assert!(workers.iter().all(|w| !after_pids.contains(&w.pid.expect("a pid"))), "not every worker was replaced");
    let after = http::get(port, "/").expect("GET / after the reload");
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(
        after_pids.iter().any(|p| after.body.contains(&format!("pid {p}\n"))),
        "answered by an old worker: {}",
        after.body
    );
}
