use deployer_tests::*;
use std::time::Duration;

#[test]
fn scratch_load_sees_failures_when_a_worker_dies_under_it() {
    let t0 = std::time::Instant::now();
    for keepalive in [false, true] {
        eprintln!("{:?} start", t0.elapsed());
        let agent = TestEnv::new().instances(1).start();
        let w = &agent.app("web").workers[0];
        let load = Load::start(w.port.unwrap(), 20, keepalive);
        assert!(load.wait_for_more(50, Duration::from_secs(10)));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.pid.unwrap() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let r = load.stop();
        eprintln!("keepalive={keepalive}: {r}");
        let load = Load::start(agent.port("web"), 50, keepalive);
        std::thread::sleep(Duration::from_millis(2000));
        let r = load.stop();
        eprintln!("front keepalive={keepalive}: {r}");
        eprintln!("{:?} dropping", t0.elapsed());
        drop(agent);
        eprintln!("{:?} dropped", t0.elapsed());
    }
}
