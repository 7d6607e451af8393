//! Group commit as a pure queue: sends that arrive while a write is in flight wait, and
//! go to Postgres together in the next transaction.
//!
//! A lone send is written at once (no timer, no added latency); a batch only forms
//! while a write is in flight, so it grows with the load and never waits for a fill.

/// The group-commit queue of one writer. See the module documentation.
#[derive(Debug)]
pub struct GroupCommit<T> {
    pending: Vec<T>,
    writing: bool,
    max: usize,
}

impl<T> GroupCommit<T> {
    /// A queue that writes at most `max` (at least 1) items per transaction.
    pub fn new(max: usize) -> Self {
        GroupCommit {
            pending: Vec::new(),
            writing: false,
            max: max.max(1),
        }
    }

    /// Queues one item for the next write, unless `limit` items already wait: then
    /// it is handed back (the caller refuses it).
    pub fn push(&mut self, item: T, limit: usize) -> Result<(), T> {
        if self.pending.len() >= limit {
            return Err(item);
        }
        self.pending.push(item);
        Ok(())
    }

    /// Items waiting for a write (not the one in flight).
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// The next batch to write, oldest first, unless a write is in flight or nothing
    /// waits. A batch taken here is in flight until [`GroupCommit::finished`].
    pub fn start(&mut self) -> Option<Vec<T>> {
        if self.writing || self.pending.is_empty() {
            return None;
        }
        let take = self.pending.len().min(self.max);
        self.writing = true;
        Some(self.pending.drain(..take).collect())
    }

    /// The write in flight is over (committed or failed).
    pub fn finished(&mut self) {
        self.writing = false;
    }

    /// A write in flight, or items waiting.
    pub fn is_busy(&self) -> bool {
        self.writing || !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_send_is_written_at_once() {
        let mut g = GroupCommit::new(512);
        g.push(1, 8).unwrap();
        assert_eq!(g.start(), Some(vec![1]));
        assert!(g.is_busy());
        g.finished();
        assert!(!g.is_busy());
        assert_eq!(g.start(), None);
    }

    #[test]
    fn sends_during_a_write_go_together_in_the_next() {
        let mut g = GroupCommit::new(512);
        g.push("a", 8).unwrap();
        assert_eq!(g.start(), Some(vec!["a"]));
        g.push("b", 8).unwrap();
        g.push("c", 8).unwrap();
        assert_eq!(g.start(), None, "one write at a time");
        g.finished();
        assert_eq!(g.start(), Some(vec!["b", "c"]));
        g.finished();
        assert_eq!(g.start(), None);
    }

    #[test]
    fn batches_are_bounded_and_keep_arrival_order() {
        let mut g = GroupCommit::new(2);
        for i in 0..5 {
            g.push(i, 8).unwrap();
        }
        let mut written = Vec::new();
        while let Some(batch) = g.start() {
            assert!(batch.len() <= 2);
            written.extend(batch);
            g.finished();
        }
        assert_eq!(written, vec![0, 1, 2, 3, 4]);
        assert!(!g.is_busy());
    }

    #[test]
    fn a_full_queue_hands_the_item_back() {
        let mut g = GroupCommit::new(2);
        g.push(1, 2).unwrap();
        assert_eq!(g.start(), Some(vec![1]));
        g.push(2, 2).unwrap();
        g.push(3, 2).unwrap();
        assert_eq!(g.push(4, 2), Err(4), "two wait already");
        assert_eq!(g.waiting(), 2);
        g.finished();
        assert_eq!(g.start(), Some(vec![2, 3]));
        g.push(4, 2).unwrap();
    }

    #[test]
    fn a_zero_limit_still_writes() {
        let mut g = GroupCommit::new(0);
        g.push((), 8).unwrap();
        assert_eq!(g.start().map(|b| b.len()), Some(1));
    }
}
