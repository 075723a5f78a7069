//! A wall clock for hot paths: read once every few messages.
//!
//! At millions of messages a second, reading the clock for each one is a
//! visible cost (the ventilator measured it when it stamped every task).
//! Tasks sent (or results received) in one burst leave (or arrive) within
//! microseconds of each other, so one reading serves a few of them, as a
//! poll loop keeps one reading per pass; [`Coarse::refresh`] starts each
//! burst with a fresh one.

/// Microseconds since the Unix epoch, read afresh every `every` calls.
#[derive(Debug, Clone)]
pub struct Coarse {
    us: u64,
    left: u32,
    every: u32,
}

impl Coarse {
    /// A clock that serves one reading to `every` calls (at least one).
    pub fn new(every: u32) -> Coarse {
        Coarse {
            us: crate::now_micros(),
            left: 0,
            every: every.max(1),
        }
    }

    /// The next call reads the clock afresh (a new burst begins).
    pub fn refresh(&mut self) {
        self.left = 0;
    }

    /// Microseconds since the Unix epoch, at most `every - 1` calls old.
    pub fn now_us(&mut self) -> u64 {
        if self.left == 0 {
            self.us = crate::now_micros();
            self.left = self.every;
        }
        self.left -= 1;
        self.us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zero_reads_the_clock_each_time() {
        let mut c = Coarse::new(0);
        let first = c.now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(c.now_us() > first, "every call reads afresh");
    }

    #[test]
    fn one_reading_serves_a_burst_and_refresh_starts_another() {
        let mut c = Coarse::new(3);
        let first = c.now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(c.now_us(), first);
        assert_eq!(c.now_us(), first);
        let fourth = c.now_us();
        assert!(fourth > first, "the fourth call reads the clock again");
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.refresh();
        assert!(c.now_us() > fourth, "refresh reads the clock again");
    }
}
