//! Every wait the bench makes is bounded. A measurement that counts towards
//! a target ends `Done` or `Unfinished` (the broker stopped delivering, or
//! the deadline passed): an unfinished run is reported in its table and the
//! bench goes on. Only real errors (a process that cannot start, a refused
//! request) fail a scenario.

use std::fmt;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a counted measurement may take: `total` from its start, and
/// `quiet` without the count moving.
#[derive(Clone, Copy)]
pub struct Limits {
    pub total: Duration,
    pub quiet: Duration,
}

pub enum Outcome<T> {
    Done(T),
    Unfinished(Unfinished),
}

impl<T> Outcome<T> {
    pub fn as_ref(&self) -> Outcome<&T> {
        match self {
            Outcome::Done(t) => Outcome::Done(t),
            Outcome::Unfinished(u) => Outcome::Unfinished(u.clone()),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(t) => Outcome::Done(f(t)),
            Outcome::Unfinished(u) => Outcome::Unfinished(u),
        }
    }
}

/// What a measurement that did not finish got to.
#[derive(Clone, Debug)]
pub struct Unfinished {
    pub done: u64,
    pub of: u64,
    /// From the start of the measurement.
    pub after: Duration,
    /// `Some` when the count had not moved for that long; `None` when the
    /// deadline passed with the count still moving.
    pub quiet: Option<Duration>,
}

impl fmt::Display for Unfinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (done, of, after) = (
            thousands(self.done),
            thousands(self.of),
            self.after.as_secs(),
        );
        match self.quiet {
            Some(quiet) => write!(
                f,
                "stalled at {done} of {of} after {after} s (nothing for {} s)",
                quiet.as_secs()
            ),
            None => write!(f, "{done} of {of} by the {after} s deadline"),
        }
    }
}

/// Follows a count towards `of`; says when it should be given up.
pub struct Progress {
    of: u64,
    limits: Limits,
    started: Instant,
    last: u64,
    last_change: Instant,
}

impl Progress {
    pub fn new(of: u64, limits: Limits) -> Progress {
        let now = Instant::now();
        Progress {
            of,
            limits,
            started: now,
            last: 0,
            last_change: now,
        }
    }

    /// `Some` once the count `done` (still short of the target) stopped
    /// moving for `quiet`, or the deadline passed.
    pub fn check(&mut self, done: u64) -> Option<Unfinished> {
        let now = Instant::now();
        if done != self.last {
            self.last = done;
            self.last_change = now;
        }
        if done >= self.of {
            return None;
        }
        let quiet = now - self.last_change;
        let stalled = quiet >= self.limits.quiet;
        if stalled || now - self.started >= self.limits.total {
            return Some(Unfinished {
                done,
                of: self.of,
                after: now - self.started,
                quiet: stalled.then_some(quiet),
            });
        }
        None
    }
}

impl Progress {
    /// Gives up at `done`: a wait for the next step outlived `quiet`.
    pub fn give_up(&mut self, done: u64) -> Unfinished {
        self.check(done).unwrap_or_else(|| Unfinished {
            done,
            of: self.of,
            after: self.started.elapsed(),
            quiet: Some(self.last_change.elapsed()),
        })
    }
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `command` to its end, its output collected, killing it if it takes
/// longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = reader(Box::new(child.stdout.take().context("no stdout")?));
    let stderr = reader(Box::new(child.stderr.take().context("no stderr")?));
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} did not end within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(8550), "8,550");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_count_that_stops_moving_is_unfinished() {
        let limits = Limits {
            total: Duration::from_secs(60),
            quiet: Duration::from_millis(20),
        };
        let mut progress = Progress::new(10, limits);
        assert!(progress.check(3).is_none());
        std::thread::sleep(Duration::from_millis(30));
        let unfinished = progress.check(3).expect("stalled");
        assert_eq!((unfinished.done, unfinished.of), (3, 10));
        assert!(
            unfinished
                .to_string()
                .starts_with("stalled at 3 of 10 after 0 s")
        );
        assert!(progress.check(10).is_none());
    }

    #[test]
    fn a_deadline_ends_a_slow_count() {
        let limits = Limits {
            total: Duration::from_millis(20),
            quiet: Duration::from_secs(60),
        };
        let mut progress = Progress::new(10_000, limits);
        std::thread::sleep(Duration::from_millis(30));
        let unfinished = progress.check(8_550).expect("past the deadline");
        assert_eq!(
            unfinished.to_string(),
            "8,550 of 10,000 by the 0 s deadline"
        );
    }
}
