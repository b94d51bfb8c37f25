//! The worker process's lockdown, watched from outside: its resource limits
//! and seccomp state in /proc, a system call the filter denies, and a read
//! outside the granted directories that Landlock refuses even though the
//! worker itself (running as whoever runs the tests) could read the file.
//!
//! The denied call and the read are made by the worker itself, after it
//! locked itself down, through the hidden `DANUBE_HOST_WORKER_SELF_TEST`
//! hook: a guest cannot make them, since WASI offers neither.

mod common;

use std::path::Path;
use std::time::Duration;

use common::probe::{ProbeSink, final_report, unused_url};
use common::{Host, granted_and_outside, guest, worker_pid, write_config};
use danube_testkit::TestBroker;

const CONFIG: i32 = 2;
const MODULE: i32 = 3;
const DEADLINE: Duration = Duration::from_secs(30);
const SELF_TEST: &str = "DANUBE_HOST_WORKER_SELF_TEST";

/// Runs the probe, which fails `open` with a configuration error at once,
/// with the worker self-test `test`; returns the exit code and the log.
fn run_self_test(dir: &Path, sandbox: &str, test: &str) -> (i32, String) {
    let config = write_config(
        dir,
        "probe.toml",
        &unused_url(),
        "probe",
        &format!("[sandbox]\n{sandbox}\n\n[probe]\nconfig_error = \"stop here\"\n"),
    );
    let host = Host::start(&guest("probe-connector"), &config, &[(SELF_TEST, test)]);
    let status = host.wait(DEADLINE);
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    (status.code().unwrap_or(-1), log)
}

/// The value columns of one row of /proc/PID/limits, e.g. `["1024", "1024"]`.
fn limit(limits: &str, name: &str) -> Vec<String> {
    let row = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in:\n{limits}"));
    row[name.len()..]
        .split_whitespace()
        .take(2)
        .map(str::to_string)
        .collect()
}

/// A field of /proc/PID/status.
fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_has_its_limits_and_filters() {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/probe", 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ProbeSink { host, .. } = ProbeSink::start(
        &broker,
        dir.path(),
        "probe",
        "/default/probe",
        ["", "max_file_mb = 64", ""],
    )
    .await;
    let worker = worker_pid(host.pid()).expect("a worker process");

    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    println!("{limits}");
    assert_eq!(limit(&limits, "Max open files"), ["1024", "1024"]);
    assert_eq!(limit(&limits, "Max core file size"), ["0", "0"]);
    assert_eq!(
        limit(&limits, "Max file size"),
        [(64u64 << 20).to_string(), (64u64 << 20).to_string()]
    );
    let processes = limit(&limits, "Max processes");
    assert!(
        processes
            .iter()
            .all(|v| v.parse::<u64>().is_ok_and(|n| n <= 4096)),
        "{processes:?}"
    );
    // Filtering mode, three filters more than the supervisor (whatever a
    // container put on both): clone3 refused, arguments narrowed, then the
    // allow-list. And no new privileges.
    let filters = |pid| status_field(pid, "Seccomp_filters").parse::<u32>().unwrap();
    assert_eq!(status_field(worker, "Seccomp"), "2");
    assert_eq!(filters(worker), filters(host.pid()) + 3);
    assert_eq!(status_field(worker, "NoNewPrivs"), "1");
    // No capabilities, even when the host runs as root; the bounding set is
    // emptied where the host could (it holds CAP_SETPCAP), so none can come
    // back.
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(worker, set), "0000000000000000", "{set}");
    }
    let host_caps = u64::from_str_radix(&status_field(host.pid(), "CapEff"), 16).unwrap();
    if host_caps & (1 << 8) != 0 {
        assert_eq!(status_field(worker, "CapBnd"), "0000000000000000");
    }
    println!(
        "host CapEff {host_caps:016x}; worker CapBnd {}",
        status_field(worker, "CapBnd")
    );
    let log = host.log();
    let status = tokio::task::spawn_blocking(move || host.terminate(DEADLINE))
        .await
        .unwrap();
    assert!(status.success(), "{log}");
}

#[test]
fn a_denied_system_call_stops_the_worker_naming_the_call() {
    let dir = tempfile::tempdir().unwrap();
    // `clone` without CLONE_THREAD is a fork: only threads may be started.
    // A guest serves no one: no `listen`.
    for call in ["ptrace", "clone", "execve", "listen"] {
        let (code, log) = run_self_test(dir.path(), "", &format!("syscall:{call}"));
        assert_eq!(code, MODULE, "log:\n{log}");
        let report = final_report(&log);
        assert!(
            report.contains("the sandbox stopped the worker: seccomp denied syscall ")
                && report.ends_with(&format!(" ({call})")),
            "{report}"
        );
        println!("{report}");
    }
    // The control: an allowed call returns, and the worker goes on to `open`.
    let (code, log) = run_self_test(dir.path(), "", "syscall:getppid");
    assert_eq!(code, CONFIG, "log:\n{log}");
    assert!(
        log.contains("worker self-test: the system call returned"),
        "{log}"
    );
}

/// What a self-test call returned: `(result, errno text)`.
fn self_test_call(dir: &Path, call: &str) -> (i64, String) {
    let (code, log) = run_self_test(dir, "", &format!("syscall:{call}"));
    assert_eq!(code, CONFIG, "log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("worker self-test: the system call returned"))
        .unwrap_or_else(|| panic!("no self-test line:\n{log}"));
    let result = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("result="))
        .and_then(|r| r.parse().ok())
        .unwrap();
    let errno = line
        .split_once("errno=")
        .map(|(_, e)| e)
        .unwrap_or_default();
    (result, errno.to_string())
}

/// Calls the worker may make, narrowed by their arguments: no raw, packet or
/// netlink sockets, no resource limits of another process (the supervisor's,
/// same user), no terminal input injection. Each is refused with EPERM while
/// the same call with the arguments the runtime uses succeeds.
#[test]
fn allowed_calls_are_narrowed_by_their_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |call: &str| {
        let (result, errno) = self_test_call(dir.path(), call);
        assert!(
            result == -1 && errno.contains("Operation not permitted"),
            "{call}: returned {result} ({errno})"
        );
    };
    let allowed = |call: &str| {
        let (result, errno) = self_test_call(dir.path(), call);
        assert!(result >= 0, "{call}: returned {result} ({errno})");
    };
    // AF_NETLINK (16) raw and AF_PACKET (17) raw; AF_INET (2) raw (3).
    refused("socket,16,3,0");
    refused("socket,17,3,768");
    refused("socket,2,3,1");
    // A TCP socket, non-blocking and close-on-exec, as WASI opens it.
    allowed(&format!(
        "socket,2,{},0",
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ));
    // RLIMIT_NOFILE (7) of the supervisor, read only; of the worker itself.
    refused("prlimit64,ppid,7,0,0");
    allowed("prlimit64,0,7,0,0");
    // TIOCSTI on standard error; then PR_SET_DUMPABLE back on.
    refused(&format!("ioctl,2,{}", libc::TIOCSTI));
    refused(&format!("prctl,{},1", libc::PR_SET_DUMPABLE));
}

#[test]
fn landlock_refuses_files_outside_the_granted_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (granted, outside) = granted_and_outside(dir.path());
    let sandbox = format!("dirs = [\"{}\"]", granted.display());

    let read_line = |log: &str| {
        log.lines()
            .find(|l| l.contains("worker self-test: read"))
            .unwrap_or_else(|| panic!("no self-test line in:\n{log}"))
            .to_string()
    };
    for path in [outside.display().to_string(), "/etc/hostname".to_string()] {
        // Readable by this test, and so by the worker before its lockdown.
        assert!(std::fs::read(&path).is_ok());
        let (code, log) = run_self_test(dir.path(), &sandbox, &format!("read:{path}"));
        assert_eq!(code, CONFIG, "log:\n{log}");
        let line = read_line(&log);
        assert!(line.contains("Permission denied"), "{line}");
        println!("{line}");
    }
    let inside = granted.join("inside.txt");
    let (code, log) = run_self_test(dir.path(), &sandbox, &format!("read:{}", inside.display()));
    assert_eq!(code, CONFIG, "log:\n{log}");
    assert!(read_line(&log).contains("ok (6 bytes)"), "{log}");
}
