//! A stop flag that every role polls at least every 100 ms.
//!
//! Roles never block in a receive without a timeout, so raising the flag (from a
//! signal handler, a test, or the role itself on END) stops them within a
//! fraction of a second. The flag is passed into each role's `run` as a
//! parameter, so tests can stop a role without sending signals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cloneable stop flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Raises this flag on SIGINT (Ctrl-C) and SIGTERM. A second SIGINT or
    /// SIGTERM while the flag is already up ends the process at once (exit
    /// code 130), for a role stuck in someone else's code.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&self.0))?;
            signal_hook::flag::register(sig, Arc::clone(&self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_the_stop() {
        let role = Shutdown::new();
        let handler = role.clone();
        let other = Shutdown::new();
        assert!(!role.is_triggered());
        handler.trigger();
        assert!(role.is_triggered(), "a clone shares the flag");
        assert!(!other.is_triggered(), "a new flag is its own");
        let seen = std::thread::spawn(move || role.is_triggered());
        assert!(seen.join().unwrap(), "another thread sees it");
    }
}
