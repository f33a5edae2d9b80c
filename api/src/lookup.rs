//! The GETs' lookups of a repository's latest result, gathered: each runner takes every lookup
//! that waits and answers them with one query. Alone, a request waits for nothing (a runner is
//! idle); under load, the requests that came while a query ran share the next one, so the
//! database's cost per request falls as the load rises instead of holding the api at its
//! round-trip rate.

use std::sync::Arc;
use std::time::Duration;

use fleet_runtime::db::{Db, ErrorKind};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{self, Latest};

/// The most lookups one query answers.
const BATCH_MAX: usize = 64;
/// Lookups that may wait for a runner; past that a request waits to be queued.
const QUEUE: usize = 4096;

/// A lookup's answer; an error of the database (not of one lookup) is shared by the batch.
type Answer = Result<Option<Latest>, Arc<sqlx::Error>>;

struct Ask {
    key: String,
    with_raw: bool,
    answer: oneshot::Sender<Answer>,
}

/// The queue of lookups and its runners.
#[derive(Clone)]
pub struct Lookups {
    queue: mpsc::Sender<Ask>,
    /// The longest a lookup may take (the statement timeout); zero: no limit.
    wait: Duration,
    asked: Counter,
}

/// What a runner needs: the database, and the queries counted.
struct Runner {
    db: Db,
    queries: Counter,
}

impl Lookups {
    /// Starts `runners` runners on `db` (each holds a connection only while its query runs),
    /// a lookup given up after `wait` (zero: never), counting lookups in `asked` and the
    /// queries that answer them in `queries`.
    pub fn start(db: Db, runners: usize, wait: Duration, asked: Counter, queries: Counter) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let runner = Arc::new(Runner { db, queries });
        for _ in 0..runners.max(1) {
            tokio::spawn(run(runner.clone(), waiting.clone()));
        }
        Self { queue, wait, asked }
    }

    /// The repository of `key` (lower-cased name) with its latest result, as
    /// [`store::latest`] answers it. A lookup that takes longer than the statement timeout
    /// (its wait for a runner included) is a time-out error, so a stalled database never
    /// leaves requests hanging behind the runners' stuck queries.
    pub async fn latest(&self, key: &str, with_raw: bool) -> Answer {
        self.asked.inc();
        let (answer, answered) = oneshot::channel();
        let ask = Ask {
            key: key.to_owned(),
            with_raw,
            answer,
        };
        let asked = async {
            if self.queue.send(ask).await.is_err() {
                return Err(Arc::new(sqlx::Error::PoolClosed));
            }
            answered
                .await
                .unwrap_or_else(|_| Err(Arc::new(sqlx::Error::PoolClosed)))
        };
        if self.wait.is_zero() {
            return asked.await;
        }
        tokio::time::timeout(self.wait, asked)
            .await
            .unwrap_or_else(|_| Err(Arc::new(sqlx::Error::PoolTimedOut)))
    }
}

/// One runner: waits for a lookup, takes every other one waiting (up to [`BATCH_MAX`]), and
/// answers them all. The queue closes when the last [`Lookups`] is dropped.
async fn run(runner: Arc<Runner>, waiting: Arc<Mutex<mpsc::Receiver<Ask>>>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    loop {
        {
            let mut waiting = waiting.lock().await;
            if waiting.recv_many(&mut batch, BATCH_MAX).await == 0 {
                return;
            }
        }
        runner.answer(&mut batch).await;
    }
}

impl Runner {
    async fn answer(&self, batch: &mut Vec<Ask>) {
        self.queries.inc();
        if let [_] = batch.as_slice() {
            let ask = batch.pop().expect("one lookup");
            self.alone(ask).await;
            return;
        }
        let keys: Vec<(&str, bool)> = batch.iter().map(|a| (a.key.as_str(), a.with_raw)).collect();
        match store::latest_many(&self.db, &keys).await {
            Ok(found) => {
                for (ask, row) in batch.drain(..).zip(found) {
                    let _ = ask.answer.send(Ok(row));
                }
            }
            // What one row may have caused: each lookup alone, so each request gets its own
            // query's answer or error.
            Err(e) if matches!(ErrorKind::of(&e), ErrorKind::Data | ErrorKind::Other) => {
                for ask in batch.drain(..) {
                    self.queries.inc();
                    self.alone(ask).await;
                }
            }
            // The database's trouble (an outage, a timeout): every lookup's answer, at once.
            Err(e) => {
                let e = Arc::new(e);
                for ask in batch.drain(..) {
                    let _ = ask.answer.send(Err(e.clone()));
                }
            }
        }
    }

    /// Answers `ask` with a query of its own.
    async fn alone(&self, ask: Ask) {
        let answer = store::latest(&self.db, &ask.key, ask.with_raw)
            .await
            .map_err(Arc::new);
        let _ = ask.answer.send(answer);
    }
}
