//! A session's life: created (a reserved place, its sandbox, its GPUs, its instance), used
//! (runs serialised in daemon slots, file operations on the blocking pool), ended (deleted,
//! expired by the reaper, or at shutdown), its instance destroyed off the async threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{new_id, Lookup, Refusal};
use super::{Ended, Remains, Session, Spec};
use crate::daemon::admission::{in_slot, lease_gpus, Admitted};
use crate::daemon::job::{self, Job};
use crate::daemon::server::{Ctx, Shutdown};
use crate::{Error, Instance};

/// Drops what ended sessions leave on the blocking pool (a last reference destroys its
/// instance, which waits for processes to die and cgroups to go) and waits until that is done.
async fn destroy(instances: Vec<Remains>) {
    if !instances.is_empty() {
        let _ = tokio::task::spawn_blocking(move || drop(instances)).await;
    }
}

/// Creates a session: reserves its place and memory, builds the policy's sandbox, takes its
/// GPUs (waiting up to the daemon's GPU wait) and creates the instance on the blocking pool.
pub(crate) async fn create(ctx: &Arc<Ctx>, spec: Spec) -> Result<Arc<Session>, Refusal> {
    let reservation = ctx
        .sessions
        .reserve(spec.policy.memory)
        .map_err(Refusal::Full)?;
    let inst = new_instance(ctx, &spec).await.map_err(Refusal::Engine)?;
    let id = new_id().map_err(Refusal::Engine)?;
    let s = Arc::new(Session::new(id, spec, inst));
    reservation.register(s.clone());
    Ok(s)
}

/// The instance of a new session of `spec`, with its GPUs.
async fn new_instance(ctx: &Arc<Ctx>, spec: &Spec) -> Result<Instance, Error> {
    let c = ctx.clone();
    let policy = spec.policy.clone();
    let sb = tokio::task::spawn_blocking(move || c.sessions.sandboxes.get(&policy))
        .await
        .unwrap_or(Err(Error::Gone))?;
    let lease = lease_gpus(&sb, ctx.config.max.gpu_wait).await?;
    tokio::task::spawn_blocking(move || match lease {
        Some(l) => sb.create_with_gpus(l),
        None => sb.create(),
    })
    .await
    .unwrap_or(Err(Error::Gone))
}

/// Ends a session by id (`why`), destroying its instance before returning unless a run still
/// holds it (that run is cancelled and destroys it as it ends). False: it was not live.
pub(crate) async fn end(ctx: &Ctx, id: &str, why: Ended) -> bool {
    match ctx.sessions.lookup(id) {
        Lookup::Live(_) => {
            let inst = ctx.sessions.remove(id, why);
            destroy(inst.into_iter().collect()).await;
            true
        }
        _ => false,
    }
}

/// Runs `job` in the session: after the session's previous run, in a daemon slot. `None`:
/// the session ended before the run started.
pub(crate) async fn run(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    mut job: Job,
    arrived: Instant,
) -> Option<Admitted> {
    let _serial = s.serial.lock().await;
    let in_use = s.begin()?;
    let mut env = s.spec.env.clone();
    env.append(&mut job.env);
    job.env = env;
    let session = s.clone();
    let r = in_slot(ctx, arrived, move |cancel, tx| {
        let Some(inst) = session.start_run(cancel) else {
            let _ = tx.send(Err(Error::Gone));
            return;
        };
        let r = job::steps(&inst, &job, cancel, false);
        session.finish_run();
        let _ = tx.send(r);
        // When the session ended meanwhile, this was the last reference: the instance is
        // destroyed here, after the answer.
        drop(inst);
    })
    .await;
    drop(in_use);
    Some(r)
}

impl Session {
    /// Marks a run in progress (cancelled if the session ends); its instance, None when the
    /// session has ended.
    fn start_run(&self, cancel: &crate::Cancel) -> Option<Arc<Instance>> {
        let mut l = self.lock();
        let inst = l.inst.clone()?;
        l.current = Some(cancel.clone());
        Some(inst)
    }

    /// Marks the run in progress as over.
    fn finish_run(&self) {
        let mut l = self.lock();
        l.current = None;
        l.runs += 1;
    }
}

/// Runs `f` with the session's instance on the blocking pool, as activity of the session.
/// None: the session ended.
pub(crate) async fn with_instance<T: Send + 'static>(
    s: &Arc<Session>,
    f: impl FnOnce(&Instance) -> crate::Result<T> + Send + 'static,
) -> Option<crate::Result<T>> {
    let in_use = s.begin()?;
    let session = s.clone();
    let r = tokio::task::spawn_blocking(move || match session.instance() {
        Some(inst) => f(&inst),
        None => Err(Error::Gone),
    })
    .await
    .unwrap_or(Err(Error::Gone));
    drop(in_use);
    Some(r)
}

/// The instance's usage, read on the blocking pool (None: the session ended, or it could not
/// be read).
pub(crate) async fn usage(s: &Arc<Session>) -> Option<crate::Usage> {
    let session = s.clone();
    tokio::task::spawn_blocking(move || session.instance().and_then(|i| i.usage().ok()))
        .await
        .ok()
        .flatten()
}

/// Ends expired sessions, every quarter second, until shutdown.
pub(crate) async fn reaper(ctx: Arc<Ctx>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.recv() => return,
        }
        let ended = ctx.sessions.reap();
        for (id, why, _) in &ended {
            eprintln!("rsandbox serve: session {id} ended: {}", why.reason());
        }
        destroy(ended.into_iter().filter_map(|(_, _, i)| i).collect()).await;
    }
}

/// Shutdown: ends every session and destroys its instance.
pub(crate) async fn close_all(ctx: &Ctx) {
    let ids: Vec<String> = ctx.sessions.all().iter().map(|s| s.id.clone()).collect();
    let insts = ids
        .iter()
        .filter_map(|id| ctx.sessions.remove(id, Ended::Shutdown))
        .collect();
    destroy(insts).await;
}
