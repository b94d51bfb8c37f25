//! CPU time, for CPU per record: of the host's processes (the supervisor and
//! its worker), of this process (the raw client runs in it) and of one of
//! its threads (the feeder, left out of the raw consumer's figure).
//!
//! Live processes and threads are read through their CPU clocks
//! (`clock_getcpuclockid`, `pthread_getcpuclockid`: nanoseconds, all threads
//! of a process, ended ones included); children the supervisor has reaped
//! count through `cutime + cstime` in `/proc/PID/stat` (clock ticks).

use std::time::Duration;

/// CPU time of a clock; `None` if it cannot be read (the process is gone).
fn clock(id: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// All threads of process `pid`, ended ones included; not its children.
pub fn process(pid: i32) -> Option<Duration> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: `id` is a valid clockid_t to write to.
    if unsafe { libc::clock_getcpuclockid(pid, &mut id) } != 0 {
        return None;
    }
    clock(id)
}

/// This process (the bench: the raw client and whatever else runs in it).
pub fn this_process() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or_default()
}

/// A thread of this process, by its `pthread_t`, while it runs.
pub fn thread(handle: libc::pthread_t) -> Option<Duration> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: `handle` is a thread of this process that has not been joined.
    if unsafe { libc::pthread_getcpuclockid(handle, &mut id) } != 0 {
        return None;
    }
    clock(id)
}

/// `cutime + cstime` of `pid`: the children it has waited for.
fn reaped_children(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// One look at a host's CPU time: the supervisor, its live worker, and the
/// workers it has reaped.
#[derive(Clone, Copy)]
pub struct HostCpu {
    supervisor: Duration,
    worker: Option<(i32, Duration)>,
    reaped: Duration,
}

impl HostCpu {
    pub fn sample(supervisor: i32, worker: Option<i32>) -> Option<HostCpu> {
        Some(HostCpu {
            supervisor: process(supervisor)?,
            worker: worker.and_then(|pid| Some((pid, process(pid)?))),
            reaped: reaped_children(supervisor).unwrap_or_default(),
        })
    }

    /// CPU time spent between `self` and `later`; `None` if the worker was
    /// replaced in between (its predecessor's last moments are not known).
    pub fn until(&self, later: &HostCpu) -> Option<Duration> {
        let worker = match (self.worker, later.worker) {
            (Some((a, t0)), Some((b, t1))) if a == b => t1.saturating_sub(t0),
            (None, None) => Duration::ZERO,
            _ => return None,
        };
        Some(
            later.supervisor.saturating_sub(self.supervisor)
                + worker
                + later.reaped.saturating_sub(self.reaped),
        )
    }
}

/// CPU time the whole machine spent busy (all cores; `/proc/stat`: user,
/// nice, system, irq, softirq, steal).
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(busy * 1_000_000_000 / per_second))
}

/// This process and the children it has waited for (hosts, brokers).
pub fn own_tree() -> Duration {
    // SAFETY: `usage` is a valid rusage to write to.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    this_process() + tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What the rest of the machine did meanwhile: one look, and the cores it
/// used on average since an earlier look.
#[derive(Clone, Copy)]
pub struct Others {
    at: std::time::Instant,
    busy: Option<Duration>,
    own: Duration,
}

impl Others {
    pub fn now() -> Others {
        Others {
            at: std::time::Instant::now(),
            busy: machine_busy(),
            own: own_tree(),
        }
    }

    /// Cores used on average since `self` by processes other than the
    /// bench and the children it has reaped (so: call it with none alive).
    pub fn cores_since(&self) -> Option<f64> {
        let later = Others::now();
        let busy = later.busy?.checked_sub(self.busy?)?;
        let others = busy.saturating_sub(later.own - self.own);
        Some(others.as_secs_f64() / (later.at - self.at).as_secs_f64().max(1e-9))
    }
}

/// Microseconds of CPU per record.
pub fn per_record(cpu: Duration, records: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / records.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_with_work() {
        let before = this_process();
        let own = process(std::process::id() as i32).expect("own clock");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(this_process() > before);
        assert!(process(std::process::id() as i32).unwrap() > own);
        // SAFETY: pthread_self has no preconditions.
        assert!(thread(unsafe { libc::pthread_self() }).is_some());
        assert!(reaped_children(std::process::id() as i32).is_some());
        assert!(machine_busy().is_some());
        let own = this_process();
        assert!(own_tree() >= own);
    }
}
