//! The steps an executor is running, so that a canceled build can stop them.
//!
//! Each started step registers how to kill it; [`RunningSteps::cancel`] kills
//! every registered step and makes the registry refuse new ones (a step that
//! registers afterwards is killed at once), so no step outlives a cancel no
//! matter where its thread was when the cancel came.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How to stop one running step: kill all of its processes.
type Kill = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct State {
    canceled: bool,
    next: u64,
    steps: HashMap<u64, Kill>,
}

/// The running steps of one executor.
#[derive(Default)]
pub struct RunningSteps {
    state: Mutex<State>,
}

impl std::fmt::Debug for RunningSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("RunningSteps")
            .field("canceled", &s.canceled)
            .field("running", &s.steps.len())
            .finish()
    }
}

impl RunningSteps {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a kill closure panicked; the map is intact.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a started step with the closure that kills it. When the
    /// registry is already canceled the step is killed before this returns.
    /// The step counts as running until the returned [`Tracked`] is dropped:
    /// drop it only once the process is gone (before its pid is reaped, so a
    /// kill never reaches a reused pid).
    pub fn track(&self, kill: impl Fn() + Send + Sync + 'static) -> Tracked<'_> {
        let mut s = self.lock();
        let canceled = Arc::new(AtomicBool::new(s.canceled));
        if s.canceled {
            kill();
        }
        let id = s.next;
        s.next += 1;
        let flag = Arc::clone(&canceled);
        s.steps.insert(
            id,
            Box::new(move || {
                flag.store(true, Ordering::SeqCst);
                kill();
            }),
        );
        Tracked {
            owner: self,
            id,
            canceled,
        }
    }

    /// Kills every running step and refuses new ones from now on.
    pub fn cancel(&self) {
        let mut s = self.lock();
        s.canceled = true;
        for kill in s.steps.values() {
            kill();
        }
    }

    /// Whether [`RunningSteps::cancel`] was called.
    pub fn is_canceled(&self) -> bool {
        self.lock().canceled
    }

    /// How many steps are registered.
    pub fn len(&self) -> usize {
        self.lock().steps.len()
    }

    /// Whether no step is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered step; unregisters on drop.
pub struct Tracked<'a> {
    owner: &'a RunningSteps,
    id: u64,
    canceled: Arc<AtomicBool>,
}

impl Tracked<'_> {
    /// Whether this step was killed by a cancel (its failure is then the
    /// cancel's doing, not the step's).
    pub fn was_canceled(&self) -> bool {
        self.canceled.load(Ordering::SeqCst)
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.owner.lock().steps.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() + Send + Sync + 'static) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        (n, move || {
            m.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn cancel_kills_registered_steps_once_each() {
        let running = RunningSteps::default();
        let (a, kill_a) = counter();
        let (b, kill_b) = counter();
        let ta = running.track(kill_a);
        let tb = running.track(kill_b);
        assert_eq!(running.len(), 2);
        assert!(!ta.was_canceled());
        running.cancel();
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
        assert!(ta.was_canceled() && tb.was_canceled());
        drop((ta, tb));
        assert!(running.is_empty());
        // Nothing is registered any more: a second cancel kills nothing.
        running.cancel();
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn finished_steps_are_not_killed() {
        let running = RunningSteps::default();
        let (a, kill_a) = counter();
        drop(running.track(kill_a));
        running.cancel();
        assert_eq!(a.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn steps_starting_after_a_cancel_are_killed_at_once() {
        let running = RunningSteps::default();
        running.cancel();
        assert!(running.is_canceled());
        let (a, kill_a) = counter();
        let t = running.track(kill_a);
        assert_eq!(a.load(Ordering::SeqCst), 1);
        assert!(t.was_canceled());
    }
}
