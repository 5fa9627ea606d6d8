//! One stop flag for every reason to end training early: SIGTERM (what a
//! preempted VM gets), SIGINT (Ctrl-C), a GCE preemption or maintenance notice,
//! or a request from code. The training loop polls it, saves a final
//! checkpoint and exits with [`EXIT_PREEMPTED`].

use super::CheckpointError;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Exit status of a run that stopped early but saved its state
/// (EX_TEMPFAIL: try again). The TPU VM babysitter restarts on it.
pub const EXIT_PREEMPTED: i32 = 75;

/// Exit status when a second Ctrl-C ends the process without waiting for the final save.
const EXIT_SECOND_INTERRUPT: i32 = 130;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
    /// The metadata server reported that the VM is being preempted.
    Preempted,
    /// The metadata server reported a host maintenance event.
    Maintenance,
    /// [`StopSignal::request`] from code.
    Requested,
}

impl StopReason {
    const ALL: [StopReason; 5] = [StopReason::Terminate, StopReason::Interrupt, StopReason::Preempted, StopReason::Maintenance, StopReason::Requested];

    fn code(self) -> usize {
        // 0 means "not set".
        Self::ALL.iter().position(|r| *r == self).map_or(0, |i| i + 1)
    }

    fn from_code(code: usize) -> Option<StopReason> {
        code.checked_sub(1).and_then(|i| Self::ALL.get(i).copied())
    }

    /// The process exit status after stopping for this reason.
    pub fn exit_code(self) -> i32 {
        EXIT_PREEMPTED
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Terminate => "SIGTERM",
            StopReason::Interrupt => "SIGINT",
            StopReason::Preempted => "preemption notice from the metadata server",
            StopReason::Maintenance => "maintenance event from the metadata server",
            StopReason::Requested => "stop requested",
        })
    }
}

/// A cloneable stop flag; all clones share one state.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    reason: Arc<AtomicUsize>,
    interrupted: Arc<AtomicBool>,
    /// The reason of the signal this one was made from (see [`StopSignal::child`]).
    parent: Option<Arc<AtomicUsize>>,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal that is also set whenever this one is (with this one's
    /// reason), and can be set alone: a sweep stops one trial with it, while
    /// the process's SIGTERM still reaches every wait of that trial.
    pub fn child(&self) -> StopSignal {
        StopSignal { parent: Some(self.reason.clone()), ..StopSignal::default() }
    }

    /// Makes SIGTERM and SIGINT set this signal instead of killing the process.
    /// A second SIGINT exits at once (status 130), for when the final save is
    /// not worth waiting for.
    pub fn install_os_handlers(&self) -> Result<(), CheckpointError> {
        let failed = |e: std::io::Error| CheckpointError::Invalid(format!("cannot install the SIGTERM/SIGINT handlers: {e}"));
        // Handlers run in registration order: the exit check must see the
        // state from before this signal, so it goes first.
        signal_hook::flag::register_conditional_shutdown(SIGINT, EXIT_SECOND_INTERRUPT, self.interrupted.clone()).map_err(failed)?;
        signal_hook::flag::register(SIGINT, self.interrupted.clone()).map_err(failed)?;
        signal_hook::flag::register_usize(SIGINT, self.reason.clone(), StopReason::Interrupt.code()).map_err(failed)?;
        signal_hook::flag::register_usize(SIGTERM, self.reason.clone(), StopReason::Terminate.code()).map_err(failed)?;
        // Storage retries and checks give way to the stop as well.
        let signal = self.clone();
        crate::storage::stop_waits_when(move || signal.is_set());
        Ok(())
    }

    /// Sets the signal unless it is already set (the first reason is kept).
    pub fn request(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.code() != 0
    }

    pub fn reason(&self) -> Option<StopReason> {
        StopReason::from_code(self.code())
    }

    /// This signal's reason code, else its parent's (0: not set).
    fn code(&self) -> usize {
        match self.reason.load(Ordering::SeqCst) {
            0 => self.parent.as_ref().map_or(0, |p| p.load(Ordering::SeqCst)),
            code => code,
        }
    }

    /// The next message of `rx` (`Ok(None)` once its sender is gone), unless
    /// a stop is requested first: a data loader's wait for a slow or stalled
    /// store then gives way within 50 ms.
    pub fn receive<T>(&self, rx: &std::sync::mpsc::Receiver<T>) -> Result<Option<T>, StopReason> {
        loop {
            if let Some(reason) = self.reason() {
                return Err(reason);
            }
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(message) => return Ok(Some(message)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins_and_codes_round_trip() {
        for r in StopReason::ALL {
            assert_eq!(StopReason::from_code(r.code()), Some(r));
        }
        assert_eq!(StopReason::from_code(0), None);
        let s = StopSignal::new();
        assert!(!s.is_set());
        let clone = s.clone();
        clone.request(StopReason::Preempted);
        s.request(StopReason::Requested);
        assert_eq!(s.reason(), Some(StopReason::Preempted));
    }

    #[test]
    fn a_child_sees_its_parents_stop_but_not_the_other_way() {
        let (process, other) = (StopSignal::new(), StopSignal::new());
        let (trial, sibling) = (process.child(), other.child());
        sibling.request(StopReason::Requested);
        assert!(!other.is_set(), "a child's request must not stop its parent");
        assert!(!trial.is_set());
        process.request(StopReason::Terminate);
        assert_eq!(trial.clone().reason(), Some(StopReason::Terminate));
        // Its own reason, once set, is the one it reports.
        let own = StopSignal::new().child();
        own.request(StopReason::Requested);
        assert_eq!(own.reason(), Some(StopReason::Requested));
    }

    #[test]
    fn receiving_gives_way_to_a_stop() {
        let signal = StopSignal::new();
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(7).unwrap();
        assert_eq!(signal.receive(&rx), Ok(Some(7)));
        signal.request(StopReason::Interrupt);
        assert_eq!(signal.receive(&rx), Err(StopReason::Interrupt), "nothing queued, a stop requested");
        drop(tx);
        assert_eq!(StopSignal::new().receive(&rx), Ok(None), "the sender is gone");
    }
}
