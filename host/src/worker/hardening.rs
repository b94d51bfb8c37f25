//! The worker process's own confinement, enforced by the kernel beneath the
//! WebAssembly sandbox: should a guest ever escape wasmtime, it finds itself
//! in a process that can do little more than the guest was allowed to.
//!
//! Two steps. [`harden_process`] runs first thing: die with the supervisor,
//! never gain privileges, never dump core, ignore the signals meant for the
//! host ([`ignore_host_signals`]). [`lock_down`] runs once the module
//! is loaded (the cache read or written, the granted directories opened) and
//! before the guest runs any code: resource limits, a Landlock ruleset that
//! leaves only the granted directories and allowed TCP ports, and a seccomp
//! filter that allows only the system calls a worker makes.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::sync::OnceLock;

use anyhow::Context;
use landlock::{
    ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use syscalls::Sysno;

use super::exit;
use crate::capability::SandboxLimits;
use crate::ipc::{FromWorker, SelfTest, write_frame};

/// Hardening that applies from the worker's first instruction: die with the
/// supervisor, never gain privileges, never dump core (the guest's memory may
/// hold credentials), ignore the signals meant for the host.
pub fn harden_process() {
    // The supervisor has ignored them already, before exec; this keeps a
    // worker started some other way the same.
    let _ = ignore_host_signals();
    // SAFETY: prctl with these options only changes this process's own flags.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    // A supervisor that died before PDEATHSIG took effect is noticed as the
    // end of the socket, its only peer: the next read sees EOF and the worker
    // exits. (Comparing the parent's pid with 1 would be wrong: the host is
    // pid 1 itself as a container's entrypoint.)
}

/// The signals that stop the host, which the worker ignores: sent to the
/// host's process group (Ctrl-C in a terminal, `timeout`, `tini -g`) or to
/// every process in its cgroup (systemd's default `KillMode=control-group`),
/// they would kill the worker mid-drain. It stops when the supervisor closes
/// its socket, and dies with it (`PR_SET_PDEATHSIG`); SIGKILL cannot be
/// ignored. And SIGTTOU: in a process group of its own the worker is in the
/// terminal's background, where (with `stty tostop`) writing its logs to the
/// terminal would stop it.
const HOST_SIGNALS: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTTOU,
];

/// Ignores [`HOST_SIGNALS`]. An ignored signal stays ignored across exec, so
/// the supervisor calls this in the child between fork and exec: it only
/// calls signal(2), which is async-signal-safe, and allocates nothing.
pub fn ignore_host_signals() -> std::io::Result<()> {
    for signal in HOST_SIGNALS {
        // SAFETY: ignoring a signal installs no handler code.
        if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Confines the worker for the rest of its life. `supervisor` is the socket
/// on which a denied system call is reported.
pub fn lock_down(limits: &SandboxLimits, supervisor: RawFd) -> anyhow::Result<()> {
    only_thread()?;
    set_resource_limits(limits.max_file_bytes).context("cannot set resource limits")?;
    drop_capabilities().context("cannot drop the worker's capabilities")?;
    restrict_paths_and_ports(limits);
    install_syscall_filter(supervisor).context("cannot install the seccomp filter")
}

/// Landlock confines the thread that applies it and the threads it starts
/// afterwards, never one already running: the lock-down must come before
/// every other thread of the worker, and this refuses it otherwise.
fn only_thread() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to count the worker's threads")?;
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .context("/proc/self/status has no thread count")?;
    if threads > 1 {
        anyhow::bail!(
            "the worker runs {threads} threads before its lock-down, which would leave all but one unconfined; this is a bug in danube-host"
        );
    }
    Ok(())
}

/// A worker started by root would keep every capability (raw sockets, any
/// file, other processes' limits): it drops them all, and a process without
/// `no_new_privs` exceptions cannot get them back. The bounding set can be
/// cut only with `CAP_SETPCAP`; a worker without it has nothing to bound.
fn drop_capabilities() -> Result<(), caps::errors::CapsError> {
    use caps::{CapSet, Capability};
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        caps::clear(None, CapSet::Bounding)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set)?;
    }
    Ok(())
}

/// Open files, a guard against descriptor leaks; processes (per user, but
/// the filter below forbids forking anyway); file size, so a runaway writer
/// cannot fill the disk; and no core dumps. Not the address space: wasmtime
/// reserves large virtual ranges for its memories.
const MAX_OPEN_FILES: u64 = 1024;
const MAX_PROCESSES: u64 = 4096;

fn set_resource_limits(max_file_bytes: u64) -> std::io::Result<()> {
    for (resource, limit) in [
        (libc::RLIMIT_NOFILE, MAX_OPEN_FILES),
        (libc::RLIMIT_NPROC, MAX_PROCESSES),
        (libc::RLIMIT_FSIZE, max_file_bytes),
        (libc::RLIMIT_CORE, 0),
    ] {
        lower_limit(resource, limit)?;
    }
    // A write past RLIMIT_FSIZE then fails with EFBIG ("File too large"),
    // which the guest sees and reports, instead of killing the worker.
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    Ok(())
}

/// Sets both the soft and the hard limit to `limit`, or leaves them where
/// they are if already lower; a lowered hard limit cannot be raised again.
fn lower_limit(resource: libc::__rlimit_resource_t, limit: u64) -> std::io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `current`.
    unsafe {
        if libc::getrlimit(resource, &mut current) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let limit = limit.min(current.rlim_max);
        let new = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        if libc::setrlimit(resource, &new) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Files a name lookup reads, for guests allowed on the network: the
/// resolver's configuration, and the C library's name-service modules.
const RESOLVER_PATHS: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ld.so.cache",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
];

/// Landlock, best effort: a kernel without it (or with an older version)
/// leaves the worker confined by WASI alone, which is logged. Only the
/// calling thread and the threads it starts are confined, so it runs while
/// the worker has no other thread ([`only_thread`]).
fn restrict_paths_and_ports(limits: &SandboxLimits) {
    match landlock_ruleset(limits) {
        Ok(RulesetStatus::FullyEnforced) => {
            tracing::debug!("Landlock confines the worker to its granted directories and ports")
        }
        Ok(RulesetStatus::PartiallyEnforced) => tracing::info!(
            "this kernel's Landlock is older than the host's: the worker is confined to its granted directories, ports may not be"
        ),
        Ok(RulesetStatus::NotEnforced) => tracing::warn!(
            "this kernel has no Landlock: the worker's files and network are confined by WASI alone"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot apply Landlock: the worker's files and network are confined by WASI alone")
        }
    }
}

fn landlock_ruleset(limits: &SandboxLimits) -> Result<RulesetStatus, landlock::RulesetError> {
    let abi = ABI::V6;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(&limits.dirs, AccessFs::from_all(abi)))?
        // A connect binds an ephemeral port first.
        .add_rule(NetPort::new(0, AccessNet::BindTcp))?;
    if !limits.allow.is_empty() {
        ruleset =
            ruleset.add_rules(path_beneath_rules(RESOLVER_PATHS, AccessFs::from_read(abi)))?;
    }
    let ports: std::collections::BTreeSet<u16> = limits.allow.iter().map(|r| r.port).collect();
    for port in ports {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    Ok(ruleset.restrict_self()?.ruleset)
}

/// The system calls a locked-down worker makes, found by tracing workers
/// (`strace -f`) through the host's test suites, with every guest there is
/// (sources, sinks, network, files): memory management for wasmtime, threads
/// and futexes for its runtime, files for granted directories, sockets for
/// allowed destinations, and the calls behind time, randomness and signals.
/// Names unknown on this architecture are skipped (e.g. `open` on aarch64).
#[rustfmt::skip]
const ALLOWED_SYSCALLS: &[&str] = &[
    // Memory.
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "membarrier", "memfd_create",
    // Threads, scheduling, waiting.
    "clone", "clone3", "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity",
    "gettid", "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "prctl",
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "exit",
    "exit_group", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    "restart_syscall", "getrandom", "getrusage", "uname", "sysinfo", "prlimit64",
    // Descriptors and events.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "close", "dup", "dup2", "dup3", "fcntl", "ioctl", "pipe2", "eventfd2",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
    "select", "pselect6",
    // Files in granted directories.
    "openat", "openat2", "open", "access", "fstat", "newfstatat", "statx", "lseek",
    "getdents64", "fsync", "fdatasync", "ftruncate", "fallocate", "fadvise64", "mkdirat",
    "unlinkat", "renameat", "renameat2", "linkat", "symlinkat", "readlinkat", "utimensat",
    "fchmod", "fchmodat", "faccessat", "faccessat2", "getcwd", "statfs", "fstatfs",
    "copy_file_range", "sendfile",
    // Sockets to allowed destinations, and name lookups.
    // Not `listen` or `accept`: a guest serves no one.
    "socket", "socketpair", "connect", "bind", "getsockname", "getpeername", "getsockopt",
    "setsockopt", "shutdown", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
];

/// Where the SIGSYS handler reports: the supervisor's socket and a
/// `SyscallDenied` frame encoded in advance, whose last four bytes it patches
/// with the denied call's number.
static DENIED_REPORT: OnceLock<(RawFd, Vec<u8>)> = OnceLock::new();

/// Offset of `si_syscall` in a 64-bit Linux `siginfo_t` for SIGSYS: three
/// ints, padding to 16, then `_sigsys { void *call_addr; int syscall; ... }`.
const SI_SYSCALL_OFFSET: usize = 24;
const _: () = assert!(
    usize::BITS == 64,
    "the SIGSYS layout above is for 64-bit Linux"
);

/// Three filters: the first makes `clone3` fail with ENOSYS (its flags sit
/// behind a pointer a filter cannot read, and the C library then falls back
/// to `clone`); the second narrows some allowed calls by their arguments
/// ([`argument_filter`]); the third allows the calls above, `clone` only for
/// threads (no `fork`), and traps everything else into
/// [`on_denied_syscall`].
fn install_syscall_filter(supervisor: RawFd) -> anyhow::Result<()> {
    let mut frame = Vec::new();
    write_frame(&mut frame, &FromWorker::SyscallDenied { number_le: [0; 4] })?;
    let _ = DENIED_REPORT.set((supervisor, frame));
    // SAFETY: the handler only reads its siginfo and static data, and calls
    // write(2) and _exit(2), which are async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_denied_syscall as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }

    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| anyhow::anyhow!("no seccomp support for this architecture: {e:?}"))?;
    let clone3 = BTreeMap::from([(Sysno::clone3.id().into(), Vec::new())]);
    let no_clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;

    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED_SYSCALLS
        .iter()
        .filter_map(|name| Sysno::from_str(name).ok())
        .map(|call| (call.id().into(), Vec::new()))
        .collect();
    let threads_only = SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )?])?;
    allowed.insert(Sysno::clone.id().into(), vec![threads_only]);
    let allow_list = SeccompFilter::new(allowed, SeccompAction::Trap, SeccompAction::Allow, arch)?;

    // The allow-list goes last: it does not allow installing another.
    for filter in [no_clone3, argument_filter(arch)?, allow_list] {
        let program: seccompiler::BpfProgram = filter.try_into()?;
        seccompiler::apply_filter_all_threads(&program)?;
    }
    Ok(())
}

/// Allowed calls whose arguments reach too far, refused with EPERM (not
/// trapped: the C library probes some of them and copes with a refusal):
///
/// * `socket` other than Unix, IPv4 and IPv6 stream and datagram sockets
///   (what WASI sockets and name lookups use): no raw, packet or netlink
///   sockets.
/// * `prlimit64` on any process but the worker itself (the same user could
///   cut the supervisor's limits).
/// * `ioctl` other than the few the runtime makes on its own descriptors:
///   no `TIOCSTI` typing into the terminal the worker shares.
/// * `prctl` options that would undo the hardening: dumpable again (ptrace
///   and core files), another parent-death signal, a ptracer, capabilities.
fn argument_filter(arch: TargetArch) -> anyhow::Result<SeccompFilter> {
    use SeccompCmpArgLen::{Dword, Qword};
    use SeccompCmpOp::{Eq, MaskedEq, Ne};
    let cond = |arg, len, op, value| SeccompCondition::new(arg, len, op, value);
    let all = |conditions: Vec<Result<SeccompCondition, _>>| {
        SeccompRule::new(conditions.into_iter().collect::<Result<Vec<_>, _>>()?)
    };

    let families = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];
    let other_family = all(families
        .iter()
        .map(|f| cond(0, Dword, Ne, *f as u64))
        .collect())?;
    // The type's low bits; SOCK_NONBLOCK and SOCK_CLOEXEC ride above them.
    let mut socket = vec![other_family];
    for kind in [
        libc::SOCK_RAW,
        libc::SOCK_RDM,
        libc::SOCK_SEQPACKET,
        libc::SOCK_DCCP,
        // SOCK_PACKET: the obsolete packet interface, opened as AF_INET.
        10,
    ] {
        socket.push(all(vec![cond(1, Dword, MaskedEq(0xf), kind as u64)])?);
    }

    let pid = std::process::id() as u64;
    let other_process = all(vec![cond(0, Dword, Ne, 0), cond(0, Dword, Ne, pid)])?;

    let ioctls = [
        libc::FIONBIO,
        libc::FIOCLEX,
        libc::FIONCLEX,
        libc::FIONREAD,
        libc::TCGETS,
        libc::TIOCGWINSZ,
    ];
    let other_ioctl = all(ioctls.iter().map(|r| cond(1, Dword, Ne, *r)).collect())?;

    let prctl = [
        libc::PR_SET_DUMPABLE,
        libc::PR_SET_PDEATHSIG,
        libc::PR_SET_PTRACER,
        libc::PR_SET_MM,
        libc::PR_SET_SECUREBITS,
        libc::PR_SET_KEEPCAPS,
        libc::PR_CAP_AMBIENT,
        libc::PR_SET_CHILD_SUBREAPER,
    ]
    .iter()
    .map(|option| all(vec![cond(0, Qword, Eq, *option as u64)]))
    .collect::<Result<Vec<_>, _>>()?;

    let rules = BTreeMap::from([
        (Sysno::socket.id().into(), socket),
        (Sysno::prlimit64.id().into(), vec![other_process]),
        (Sysno::ioctl.id().into(), vec![other_ioctl]),
        (Sysno::prctl.id().into(), prctl),
    ]);
    Ok(SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?)
}

/// SIGSYS from the filter: report the denied call to the supervisor and
/// exit. Nothing here allocates or locks.
extern "C" fn on_denied_syscall(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS, whose
    // `si_syscall` lies at SI_SYSCALL_OFFSET on 64-bit Linux.
    let number = unsafe { *(info as *const u8).add(SI_SYSCALL_OFFSET).cast::<i32>() };
    if let Some((fd, frame)) = DENIED_REPORT.get() {
        let mut report = [0u8; 16];
        if let Some(report) = report.get_mut(..frame.len()) {
            report.copy_from_slice(frame);
            let end = report.len();
            report[end - 4..].copy_from_slice(&number.to_le_bytes());
            // SAFETY: write(2) from a buffer on this stack.
            unsafe { libc::write(*fd, report.as_ptr().cast(), report.len()) };
        }
    }
    // SAFETY: ends the process without running anything else.
    unsafe { libc::_exit(exit::SYSCALL_DENIED.into()) };
}

/// The text the supervisor shows for a denied call.
pub fn describe_denied_syscall(number_le: [u8; 4]) -> String {
    let number = u32::from_le_bytes(number_le);
    let name = Sysno::new(number as usize).map_or("unknown", |s| s.name());
    format!("the sandbox stopped the worker: seccomp denied syscall {number} ({name})")
}

/// Runs a [`SelfTest`] on the locked-down worker and logs what happened.
pub fn self_test(test: &SelfTest) {
    match test {
        SelfTest::Read(path) => {
            let outcome = match std::fs::read(path) {
                Ok(bytes) => format!("ok ({} bytes)", bytes.len()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(path = %path.display(), %outcome, "worker self-test: read");
        }
        SelfTest::Syscall(spec) => {
            let mut parts = spec.split(',');
            let name = parts.next().unwrap_or_default();
            // Arguments: numbers, or `ppid` for the supervisor's pid.
            let mut args = [0 as libc::c_long; 6];
            for (slot, arg) in args.iter_mut().zip(parts) {
                *slot = match arg {
                    // SAFETY: getppid has no preconditions.
                    "ppid" => unsafe { libc::getppid() }.into(),
                    n => n.parse().unwrap_or(0),
                };
            }
            match Sysno::from_str(name) {
                Ok(call) => {
                    // SAFETY: a raw system call the host's tests choose: ones
                    // the filters stop, or harmless ones.
                    let result = unsafe {
                        libc::syscall(
                            call.id().into(),
                            args[0],
                            args[1],
                            args[2],
                            args[3],
                            args[4],
                            args[5],
                        )
                    };
                    let errno = std::io::Error::last_os_error();
                    tracing::warn!(
                        syscall = spec,
                        result,
                        errno = %errno,
                        "worker self-test: the system call returned"
                    );
                }
                Err(()) => tracing::warn!(syscall = name, "worker self-test: no such system call"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prepared_report_decodes_with_the_patched_number() {
        let mut frame = Vec::new();
        write_frame(&mut frame, &FromWorker::SyscallDenied { number_le: [0; 4] }).unwrap();
        let end = frame.len();
        let ptrace = Sysno::ptrace.id();
        frame[end - 4..].copy_from_slice(&ptrace.to_le_bytes());
        match crate::ipc::read_frame::<FromWorker>(&mut frame.as_slice()).unwrap() {
            Some(FromWorker::SyscallDenied { number_le }) => {
                assert_eq!(u32::from_le_bytes(number_le), ptrace as u32);
                let text = describe_denied_syscall(number_le);
                assert!(
                    text.ends_with(&format!("syscall {ptrace} (ptrace)")),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_lock_down_refuses_to_leave_a_running_thread_unconfined() {
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || parked.recv());
        let refused = only_thread().unwrap_err().to_string();
        assert!(
            refused.contains("threads before its lock-down"),
            "{refused}"
        );
        drop(stop);
        let _ = other.join();
    }

    #[test]
    fn every_allowed_name_is_a_system_call() {
        let unknown: Vec<&&str> = ALLOWED_SYSCALLS
            .iter()
            .filter(|n| Sysno::from_str(n).is_err())
            .collect();
        // Legacy calls absent on some architectures only.
        assert!(
            unknown
                .iter()
                .all(|n| ["open", "access", "poll", "select", "dup2", "epoll_wait"].contains(n)),
            "{unknown:?}"
        );
    }
}
