//! Spawning an agent in its own process group and supervising it: the wall
//! clock, and stopping it when the runner is asked to stop. Stopping is
//! always the same: SIGTERM to the whole group, a grace period, SIGKILL.

use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long a child may run and how it is stopped.
#[derive(Debug, Clone, Copy)]
pub struct Supervision {
    pub wallclock: Duration,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// How often the child is checked on.
    pub poll: Duration,
}

impl Supervision {
    pub fn new(wallclock: Duration, grace: Duration) -> Self {
        Supervision {
            wallclock,
            grace,
            poll: Duration::from_millis(25),
        }
    }
}

/// Why the child is no longer running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself.
    Exited,
    /// It ran past its wall clock and was stopped.
    WallClock,
    /// The runner was asked to stop (Ctrl-C, SIGTERM) and stopped it.
    Interrupted,
    /// Its reservation or a cap was exhausted and the runner stopped it.
    Budget,
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub ending: Ending,
    pub status: ExitStatus,
    /// True when the child had to be killed after the grace period.
    pub killed: bool,
}

/// Puts the command in a new process group whose id is the child's pid, so
/// that the child and everything it starts can be signalled together.
pub fn own_process_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

fn signal_group(child: &Child, sig: Signal) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // ESRCH (the group is already gone) is the expected way for this to fail.
    if let Err(e) = killpg(Pid::from_raw(pid), sig) {
        tracing::debug!("killpg {sig} to {pid}: {e}");
    }
}

/// Waits for the child until it exits, its wall clock runs out, or `stop`
/// becomes true. The child must have been spawned with
/// [`own_process_group`]. When the child itself exits, whatever it left
/// running in its group is killed too: an agent's run ends with its process.
pub fn supervise(
    child: &mut Child,
    sup: &Supervision,
    stop: &AtomicBool,
) -> std::io::Result<Outcome> {
    supervise_with_budget(child, sup, stop, &AtomicBool::new(false))
}

/// [`supervise`], and stops the child (terminate, then kill) as soon as
/// `budget` becomes true: its spend reached its reservation or a cap.
pub fn supervise_with_budget(
    child: &mut Child,
    sup: &Supervision,
    stop: &AtomicBool,
    budget: &AtomicBool,
) -> std::io::Result<Outcome> {
    let deadline = Instant::now() + sup.wallclock;
    loop {
        if let Some(status) = child.try_wait()? {
            // The leader is reaped; its group id cannot be reused while any
            // member is alive, so this only reaches stragglers of this run.
            signal_group(child, Signal::SIGKILL);
            return Ok(Outcome {
                ending: Ending::Exited,
                status,
                killed: false,
            });
        }
        let ending = if stop.load(Ordering::SeqCst) {
            Some(Ending::Interrupted)
        } else if Instant::now() >= deadline {
            Some(Ending::WallClock)
        } else if budget.load(Ordering::SeqCst) {
            Some(Ending::Budget)
        } else {
            None
        };
        if let Some(ending) = ending {
            let (status, killed) = terminate(child, sup)?;
            return Ok(Outcome {
                ending,
                status,
                killed,
            });
        }
        std::thread::sleep(sup.poll);
    }
}

/// SIGTERM to the group, up to `grace` to exit, then SIGKILL.
fn terminate(child: &mut Child, sup: &Supervision) -> std::io::Result<(ExitStatus, bool)> {
    signal_group(child, Signal::SIGTERM);
    let until = Instant::now() + sup.grace;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            signal_group(child, Signal::SIGKILL);
            return Ok((status, false));
        }
        std::thread::sleep(sup.poll);
    }
    signal_group(child, Signal::SIGKILL);
    let status = child.wait()?;
    Ok((status, true))
}

/// Turns Ctrl-C and SIGTERM to the runner into a flag that [`supervise`]
/// watches, instead of the default of dying and leaving the child behind.
/// Returns once the handlers are in place.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    std::thread::Builder::new()
        .name("gov-run-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let handlers = signal(SignalKind::interrupt())
                    .and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
                let (mut int, mut term) = match handlers {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    set.store(true, Ordering::SeqCst);
                }
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("the signal thread ended early"))??;
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Child {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        own_process_group(&mut cmd).spawn().expect("spawn sh")
    }

    #[test]
    fn a_child_that_exits_is_not_touched() {
        let mut child = sh("exit 3");
        let sup = Supervision::new(Duration::from_secs(10), Duration::from_millis(100));
        let out = supervise(&mut child, &sup, &AtomicBool::new(false)).expect("supervise");
        assert_eq!(out.ending, Ending::Exited);
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn budget_flag_stops_with_its_own_ending() {
        let mut child = sh("sleep 30");
        let sup = Supervision::new(Duration::from_secs(30), Duration::from_secs(5));
        let out = supervise_with_budget(
            &mut child,
            &sup,
            &AtomicBool::new(false),
            &AtomicBool::new(true),
        )
        .expect("supervise");
        assert_eq!(out.ending, Ending::Budget);
        assert!(!out.killed);
    }

    #[test]
    fn stop_flag_interrupts() {
        let mut child = sh("sleep 30");
        let sup = Supervision::new(Duration::from_secs(30), Duration::from_secs(5));
        let started = Instant::now();
        let out = supervise(&mut child, &sup, &AtomicBool::new(true)).expect("supervise");
        assert_eq!(out.ending, Ending::Interrupted);
        assert!(!out.killed);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
