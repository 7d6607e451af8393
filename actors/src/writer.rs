//! The node's writer: group commit across conversations.
//!
//! Each Conversation actor keeps one write in flight and gathers its own sends
//! meanwhile ([`crate::batch::GroupCommit`]); the batch it writes comes here. The
//! writer puts the batches of many conversations into one transaction
//! ([`Store::append_many`]): one insert for all their rows, one update of all their
//! conversation rows, one of all their senders' cursors. At most `in_flight` such
//! transactions run at once; batches that arrive while all of them are busy wait and
//! go together into the next, so a transaction carries more conversations the busier
//! the node is, and a lone send still goes out at once.
//!
//! A conversation another transaction holds (another node writing it) is not waited
//! for: it comes back `Busy`, untouched, and goes into a later transaction a moment
//! after. A senders' batch is answered only once its transaction committed.

use crate::metrics as m;
use actix::ArbiterHandle;
use chat_store::{Appended, Batch, BatchOutcome, NewMessage, Store, StoreError};
use chat_wire::ConvId;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a conversation another writer holds waits before it is tried again: the
/// first wait, doubled each time it is found held again, up to the longest.
const BUSY_RETRY: Duration = Duration::from_millis(1);
const BUSY_RETRY_MAX: Duration = Duration::from_millis(100);

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Transactions in flight at once (at most the write pool's size).
    pub in_flight: usize,
    /// Most sends in one transaction (a single conversation's batch may exceed it).
    pub max_rows: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            in_flight: 2,
            max_rows: 2048,
        }
    }
}

/// The answer to one conversation's batch.
type Reply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// One conversation's batch, waiting for a transaction.
struct Job {
    conv: ConvId,
    rows: Vec<NewMessage>,
    reply: Reply,
    /// Times it was found held by another writer in a row.
    busy: u32,
}

/// A handle on the node's writer. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer on `arbiter` (a thread of its own), or on the current
    /// runtime; it runs until every handle is gone.
    pub fn start(store: Store, cfg: WriterConfig, arbiter: Option<&ArbiterHandle>) -> Writer {
        // Unbounded on purpose: each Conversation actor has at most one batch here, so
        // the queue is bounded by the actors, and their own queues by their senders.
        let (tx, rx) = mpsc::unbounded_channel();
        match arbiter {
            Some(a) => {
                a.spawn(run(store, cfg, rx));
            }
            None => {
                actix::spawn(run(store, cfg, rx));
            }
        }
        Writer { tx }
    }

    /// Stores one conversation's batch with the next group commit; resolves once it is
    /// committed (or with why it was not).
    pub async fn append(
        &self,
        conv: ConvId,
        rows: Vec<NewMessage>,
    ) -> Result<Vec<Appended>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                conv,
                rows,
                reply,
                busy: 0,
            })
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }
}

async fn run(store: Store, cfg: WriterConfig, mut rx: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<Job>();
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.is_empty() {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => queue.push_back(job),
                    None => return,
                },
                Some(job) = retry_rx.recv() => queue.push_back(job),
            }
        }
        // Whatever else is ready joins this transaction.
        while let Ok(job) = retry_rx.try_recv() {
            queue.push_back(job);
        }
        while let Ok(job) = rx.try_recv() {
            queue.push_back(job);
        }
        let batch = take_batch(&mut queue, cfg.max_rows);
        let (store, retry) = (store.clone(), retry_tx.clone());
        actix::spawn(async move {
            commit(&store, batch, &retry).await;
            drop(permit);
        });
    }
}

/// The jobs of the next transaction, oldest first: one per conversation (a second
/// batch of the same conversation waits for the first), at most `max_rows` sends
/// unless the first job alone is larger.
fn take_batch(queue: &mut VecDeque<Job>, max_rows: usize) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut rows = 0;
    let mut convs = HashSet::new();
    let mut rest = VecDeque::new();
    while let Some(job) = queue.pop_front() {
        let fits = batch.is_empty() || rows + job.rows.len() <= max_rows;
        if fits && convs.insert(job.conv) {
            rows += job.rows.len();
            batch.push(job);
        } else {
            rest.push_back(job);
            if rows >= max_rows {
                break;
            }
        }
    }
    rest.append(queue);
    *queue = rest;
    batch
}

/// Runs one transaction and answers its jobs.
async fn commit(store: &Store, jobs: Vec<Job>, retry: &mpsc::UnboundedSender<Job>) {
    let batches: Vec<Batch<'_>> = jobs
        .iter()
        .map(|j| Batch {
            conv: j.conv,
            messages: &j.rows,
        })
        .collect();
    metrics::histogram!(m::COMMIT_CONVERSATIONS).record(batches.len() as f64);
    metrics::histogram!(m::COMMIT_ROWS)
        .record(batches.iter().map(|b| b.messages.len()).sum::<usize>() as f64);
    let result = store.append_many(&batches).await;
    drop(batches);
    match result {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                match outcome {
                    BatchOutcome::Appended(out) => {
                        let _ = job.reply.send(Ok(out));
                    }
                    BatchOutcome::NotFound => {
                        let _ = job.reply.send(Err(StoreError::NotFound("conversation")));
                    }
                    BatchOutcome::Busy => {
                        metrics::counter!(m::COMMIT_BUSY_TOTAL).increment(1);
                        let retry = retry.clone();
                        let mut job = job;
                        let wait = BUSY_RETRY
                            .saturating_mul(1 << job.busy.min(7))
                            .min(BUSY_RETRY_MAX);
                        job.busy += 1;
                        actix::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = retry.send(job);
                        });
                    }
                }
            }
        }
        // One conversation's bad row must not fail the others: each goes alone once.
        // (An outage fails them all; their senders retry with the same cids.)
        Err(e) if jobs.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; writing its batches one by one");
            for job in jobs {
                let batch = [Batch {
                    conv: job.conv,
                    messages: &job.rows,
                }];
                let answer = match store.append_many(&batch).await {
                    Ok(mut o) => match o.pop() {
                        Some(BatchOutcome::Appended(out)) => Ok(out),
                        Some(BatchOutcome::Busy) => {
                            Err(StoreError::Unavailable("conversation busy".into()))
                        }
                        Some(BatchOutcome::NotFound) | None => {
                            Err(StoreError::NotFound("conversation"))
                        }
                    },
                    Err(e) => Err(e),
                };
                let _ = job.reply.send(answer);
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_wire::{Draft, UserId};

    fn job(conv: i64, rows: usize) -> Job {
        let (reply, _) = oneshot::channel();
        let rows = (0..rows)
            .map(|i| NewMessage {
                sender: UserId(1),
                draft: Draft::text(format!("c{conv}-{i}"), "x"),
            })
            .collect();
        Job {
            conv: ConvId(conv),
            rows,
            reply,
            busy: 0,
        }
    }

    fn convs(jobs: &[Job]) -> Vec<i64> {
        jobs.iter().map(|j| j.conv.0).collect()
    }

    #[test]
    fn a_batch_takes_one_job_per_conversation_in_arrival_order() {
        let mut q: VecDeque<Job> = [job(1, 1), job(2, 1), job(1, 1), job(3, 1)].into();
        let b = take_batch(&mut q, 100);
        assert_eq!(convs(&b), vec![1, 2, 3]);
        assert_eq!(q.iter().map(|j| j.conv.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_batch_is_bounded_by_rows_but_never_empty() {
        let mut q: VecDeque<Job> = [job(1, 5), job(2, 5), job(3, 5)].into();
        let b = take_batch(&mut q, 10);
        assert_eq!(convs(&b), vec![1, 2]);
        let b = take_batch(&mut q, 10);
        assert_eq!(convs(&b), vec![3]);
        let mut q: VecDeque<Job> = [job(9, 50)].into();
        assert_eq!(
            convs(&take_batch(&mut q, 10)),
            vec![9],
            "an oversized batch goes alone"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn jobs_left_over_keep_their_order() {
        let mut q: VecDeque<Job> = [job(1, 1), job(1, 1), job(2, 1), job(1, 1)].into();
        let b = take_batch(&mut q, 100);
        assert_eq!(convs(&b), vec![1, 2]);
        assert_eq!(
            q.iter()
                .map(|j| j.rows[0].draft.cid.clone())
                .collect::<Vec<_>>(),
            vec!["c1-0", "c1-0"]
        );
    }
}
