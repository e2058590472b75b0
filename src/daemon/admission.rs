//! Admission of a request's run: its sandbox built (or taken from the cache), its GPUs leased
//! while it waits, a slot taken from the pool (a full queue refuses: 503 + Retry-After), the
//! work run on tokio's blocking pool, and the outcome counted for `/metrics`. Dropping a
//! request's future (client gone) leaves the queue or cancels its run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Response;
use tokio::sync::oneshot;

use super::http::{unavailable, Body};
use super::job::{self, Done, Job};
use super::pool::{Pool, Refused, Slot};
use super::server::Ctx;
use crate::{Cancel, Error, GpuLease, Sandbox, Status};

/// Why a job produced no `Done`.
pub(crate) enum Failed {
    Refused(Refused),
    Engine(Error),
}

/// A job's result and how long it waited for its slot.
pub(crate) type Admitted<T = Done> = (Result<T, Failed>, Duration);

/// What work in a slot produces, as `/metrics` counts it (`ok`, `timeout`, ...).
pub(crate) trait Counted {
    fn outcome_name(&self) -> &'static str;
}

impl Counted for Done {
    fn outcome_name(&self) -> &'static str {
        self.run
            .as_ref()
            .or(self.compile.as_ref())
            .map(|o| status_name(o.status))
            .unwrap_or("error")
    }
}

/// 503 for a request the pool refused: its queue is full, or the daemon is shutting down.
pub(crate) fn refused(r: &Refused) -> Response<Body> {
    unavailable("queue", refusal_message(r))
}

/// What a refusal says to the client.
pub(crate) fn refusal_message(r: &Refused) -> &'static str {
    match r {
        Refused::QueueFull => "the run queue is full",
        Refused::Closed => "the daemon is shutting down",
    }
}

/// Cancels a run if the request's future is dropped before the answer (client gone).
struct CancelOnDrop<'a> {
    cancel: Cancel,
    pool: &'a Pool,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.cancel();
            self.pool.record("cancelled", None, None);
        }
    }
}

/// Counts a request dropped while it waits for a slot or GPUs (client gone) as cancelled.
struct Waiting<'a>(&'a Pool, bool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.record("cancelled", None, None);
        }
    }
}

/// Waits (without a thread) until `sb`'s GPU pool can lease what `sb` asks for: a request
/// for GPUs that exist but are held waits here, in the queue, for up to `max`. Dropping the
/// future (client gone) ends the wait. The GPU pool has no wake-up of its own, so this asks
/// again every 20 ms.
pub(crate) async fn lease_gpus(sb: &Sandbox, max: Duration) -> Result<Option<GpuLease>, Error> {
    let Some(pool) = sb.gpu_pool() else {
        return Ok(None);
    };
    let req = sb.gpu_request();
    let start = Instant::now();
    loop {
        match pool.try_allocate(&req) {
            Ok(lease) => return Ok(Some(lease)),
            Err(e) if e.is_retryable() && start.elapsed() < max => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The job's sandbox (built once per policy, then cached) and its GPUs when it asks for some.
async fn prepare(ctx: &Arc<Ctx>, job: &Job) -> Result<(Sandbox, Option<GpuLease>), Error> {
    let c = ctx.clone();
    let policy = job.policy.clone();
    let sb = tokio::task::spawn_blocking(move || c.sandboxes.get(&policy))
        .await
        .unwrap_or(Err(Error::Gone))?;
    let gpus = lease_gpus(&sb, ctx.config.max.gpu_wait).await?;
    Ok((sb, gpus))
}

/// Queues a job, runs it on the blocking pool, and waits for its result. Dropping the
/// returned future cancels the job, queued or running.
pub(crate) async fn run_job(ctx: &Arc<Ctx>, job: Job, arrived: Instant) -> Admitted {
    let mut waiting = Waiting(&ctx.pool, true);
    let prepared = prepare(ctx, &job).await;
    waiting.1 = false;
    let (sb, gpus) = match prepared {
        Ok(p) => p,
        Err(e) => {
            ctx.pool.record("error", None, None);
            return (Err(Failed::Engine(e)), arrived.elapsed());
        }
    };
    in_slot(ctx, arrived, move |cancel, tx| {
        job::execute(&sb, gpus, &job, cancel, |r| {
            let _ = tx.send(r);
        })
    })
    .await
}

/// Waits for a slot (a full queue refuses), counting a refusal as `rejected` and a request
/// dropped while it waits as `cancelled`.
async fn take_slot(pool: &Pool) -> Result<Slot, Refused> {
    let mut waiting = Waiting(pool, true);
    let acquired = pool.acquire().await;
    waiting.1 = false;
    if acquired.is_err() {
        pool.record("rejected", None, None);
    }
    acquired
}

/// Waits for a slot (a full queue refuses), then runs `work` on the blocking pool with the
/// run's `Cancel` and where to send its result, and waits for that result; the slot is held
/// until `work` returns (teardown after the answer included). Dropping the returned future
/// leaves the queue, or cancels the work once it runs. Counts the outcome for `/metrics`.
pub(crate) async fn in_slot<T, W>(ctx: &Arc<Ctx>, arrived: Instant, work: W) -> Admitted<T>
where
    T: Counted + Send + 'static,
    W: FnOnce(&Cancel, oneshot::Sender<Result<T, Error>>) + Send + 'static,
{
    let slot = match take_slot(&ctx.pool).await {
        Ok(s) => s,
        Err(r) => return (Err(Failed::Refused(r)), arrived.elapsed()),
    };
    let queued = arrived.elapsed();
    let cancel = match Cancel::new() {
        Ok(c) => c,
        Err(e) => return (Err(Failed::Engine(e)), queued),
    };
    let r = run_in_slot(ctx, slot, cancel, work)
        .await
        .map_err(|e| match e {
            Error::Cancelled => Failed::Refused(Refused::Closed),
            e => Failed::Engine(e),
        });
    ctx.pool
        .record(outcome_name(&r), Some(arrived.elapsed()), Some(queued));
    (r, queued)
}

/// Runs `work` on the blocking pool, holding `slot` and registered with the pool (so that
/// shutdown can cancel it), and waits for the result it sends. Dropping the future cancels
/// the run.
async fn run_in_slot<T, W>(ctx: &Arc<Ctx>, slot: Slot, cancel: Cancel, work: W) -> Result<T, Error>
where
    T: Send + 'static,
    W: FnOnce(&Cancel, oneshot::Sender<Result<T, Error>>) + Send + 'static,
{
    let mut guard = CancelOnDrop {
        cancel: cancel.clone(),
        pool: &ctx.pool,
        armed: true,
    };
    let (tx, rx) = oneshot::channel();
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let id = c.pool.started(&cancel);
        work(&cancel, tx);
        c.pool.finished(id);
    });
    let r = rx.await.unwrap_or(Err(Error::Gone));
    guard.armed = false;
    r
}

/// How `/metrics` counts a finished request: the report's status, `cancelled` or `error`.
fn outcome_name<T: Counted>(r: &Result<T, Failed>) -> &'static str {
    match r {
        Ok(d) => d.outcome_name(),
        Err(Failed::Refused(_)) => "cancelled",
        Err(Failed::Engine(_)) => "error",
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Exit => "exit",
        Status::Signal => "signal",
        Status::Timeout => "timeout",
        Status::CpuTime => "cpu_time",
        Status::Memory => "memory",
        Status::Pids => "pids",
        Status::OutputLimit => "output_limit",
        Status::Seccomp => "seccomp",
    }
}
