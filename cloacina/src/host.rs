//! Which process a worker is, told apart from every other: its host name for people, and for
//! the engine the kernel boot and PID namespace it runs in and when it started.
//!
//! A worker whose process is gone is dead at once, without waiting out its lease, but only
//! when the one judging shares its kernel and PID namespace (so a pid means the same process
//! to both) and the pid still names the process that registered (not a reused pid or a
//! thread). Containers that share a host name but not a PID namespace fall back on the lease.

use std::path::Path;

/// This machine's host name, as workers record it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A process's identity beyond its pid: the PID space it lives in (kernel boot id and PID
/// namespace) and its start time in clock ticks since boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessKey {
    /// `<boot id>/<PID namespace inode>`: processes with equal spaces see the same pids.
    space: String,
    /// When the process started, in clock ticks since boot.
    started: u64,
}

impl ProcessKey {
    /// This process's key; None where `/proc` cannot tell (not Linux, or a `/proc` mounted for
    /// another PID namespace).
    pub(crate) fn of_this_process() -> Option<Self> {
        Self::read(Path::new("/proc"), std::process::id())
    }

    fn read(proc: &Path, pid: u32) -> Option<Self> {
        let own = std::fs::read_link(proc.join("self")).ok()?;
        if own.to_str()? != pid.to_string() {
            return None; // `/proc` shows another namespace's pids: no pid lookup would be ours
        }
        let boot = std::fs::read_to_string(proc.join("sys/kernel/random/boot_id")).ok()?;
        let namespace = std::fs::read_link(proc.join("self/ns/pid")).ok()?;
        let namespace = namespace.to_str()?;
        let inode = namespace.strip_prefix("pid:[")?.strip_suffix(']')?;
        Some(Self {
            space: format!("{}/{inode}", boot.trim()),
            started: start_ticks(proc, pid)?,
        })
    }

    /// The key as a worker row stores it.
    pub(crate) fn to_text(&self) -> String {
        format!("{}/{}", self.space, self.started)
    }

    /// A key stored by `to_text`; None if it is not one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (space, started) = text.rsplit_once('/')?;
        let (boot, inode) = space.split_once('/')?;
        if boot.is_empty() || inode.is_empty() {
            return None;
        }
        Some(Self {
            space: space.to_string(),
            started: started.parse().ok()?,
        })
    }

    /// Whether process `pid`, registered with this key, is known to be gone as seen by the
    /// process `observer`: false whenever that cannot be told from where the observer runs.
    pub(crate) fn is_gone(&self, pid: i32, observer: &ProcessKey) -> bool {
        self.is_gone_in(Path::new("/proc"), pid, observer)
    }

    fn is_gone_in(&self, proc: &Path, pid: i32, observer: &ProcessKey) -> bool {
        if self.space != observer.space || pid <= 0 {
            return false;
        }
        // A missing pid is gone; so is one that now names a thread or a newer process.
        process_start(proc, pid as u32) != Some(self.started)
    }
}

/// When process `pid` started; None if there is no such process (a thread id is not one).
fn process_start(proc: &Path, pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(proc.join(pid.to_string()).join("status")).ok()?;
    let tgid = status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim();
    if tgid != pid.to_string() {
        return None;
    }
    start_ticks(proc, pid)
}

/// Field 22 of `/proc/<pid>/stat`: when the process (or thread) started, in ticks since boot.
fn start_ticks(proc: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_key_that_round_trips() {
        let Some(key) = ProcessKey::of_this_process() else {
            return; // no /proc here
        };
        assert_eq!(ProcessKey::parse(&key.to_text()), Some(key.clone()));
        assert!(!key.is_gone(std::process::id() as i32, &key));
    }

    #[test]
    fn a_pid_that_does_not_exist_is_gone_in_the_same_space_only() {
        let Some(me) = ProcessKey::of_this_process() else {
            return;
        };
        let dead = ProcessKey {
            space: me.space.clone(),
            started: 1,
        };
        // Beyond the kernel's largest pid (4194304), so no process has it.
        assert!(dead.is_gone(i32::MAX, &me));
        let elsewhere = ProcessKey {
            space: "another-boot/1".into(),
            started: 1,
        };
        assert!(!elsewhere.is_gone(i32::MAX, &me));
    }

    #[test]
    fn a_reused_pid_or_a_thread_id_is_not_the_registered_process() {
        let Some(me) = ProcessKey::of_this_process() else {
            return;
        };
        // This process's pid, registered by a process that started at another time.
        let earlier = ProcessKey {
            space: me.space.clone(),
            started: me.started.wrapping_sub(1),
        };
        assert!(earlier.is_gone(std::process::id() as i32, &me));
        // A thread's id resolves under /proc too, but never names a worker process.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let tid: Option<u32> = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name()?.to_str()?.parse().ok());
            tx.send(tid).unwrap();
            let _ = done_rx.recv();
        });
        if let Some(tid) = rx.recv().unwrap() {
            let proc = Path::new("/proc");
            let started = start_ticks(proc, tid).expect("a live thread has a start time");
            let registered = ProcessKey {
                space: me.space.clone(),
                started,
            };
            assert!(registered.is_gone(tid as i32, &me));
        }
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn keys_that_are_not_keys_do_not_parse() {
        for text in ["", "x", "a/b", "a/b/c", "/1/2", "a//2"] {
            assert_eq!(ProcessKey::parse(text), None, "{text:?}");
        }
        assert_eq!(
            ProcessKey::parse("boot/4026531836/123"),
            Some(ProcessKey {
                space: "boot/4026531836".into(),
                started: 123
            })
        );
    }
}
