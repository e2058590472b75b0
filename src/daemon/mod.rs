//! `rsandbox serve`: HTTP/1.1 + JSON on a Unix socket (and optionally TCP), in mini-redis's
//! shape: [`serve`]`(endpoints, config, shutdown)` here, a thin binary around it.
//!
//! - `server`: accept loops, one task per connection (a semaphore bounds them), the shutdown
//!   signal, drain and graceful shutdown; `router`: access checks and path -> handler;
//!   `http`: answers, error shapes, bodies within the size limit; `error`: why a request is
//!   refused.
//! - `admission`: a request's sandbox, GPUs and slot, its run on tokio's blocking pool (the
//!   engine forks with `clone3` and raw syscalls only in the child, so a multi-threaded caller
//!   is safe); `pool`: the slots (default one per core), the bounded queue in front of them
//!   (full: 503 + Retry-After), runs in flight, metrics; `job`: a request's work as data.
//! - `native`: `POST /v1/run`; `compat`: SandboxFusion's `POST /run_code`, `GET /v1/ping`;
//!   `maze`: Maze's session API; `session`: sessions and `/v1/sessions`; `health`:
//!   `/v1/health` and `/metrics`; `jupyter`: the Jupyter Server kernels API and its websocket;
//!   `seed`: the microsandbox, AI Computer and E2B clients' APIs; `browser`: no web page may use
//!   the compatible APIs (Origin, Host); `lang`: the one table of languages; `listen`: sockets,
//!   socket activation, access; `config`: the settings.
//!
//! A client that disconnects cancels its run: hyper drops the request's future, whose guard
//! cancels the run's `Cancel`, which the supervisor polls beside the program's pipes. SIGTERM
//! stops accepting, lets runs in flight finish for the grace period, then cancels the rest.

mod admission;
mod browser;
mod cells;
mod compat;
mod config;
mod error;
mod health;
mod http;
mod job;
mod jupyter;
mod lang;
pub mod listen;
mod maze;
mod native;
mod pool;
mod router;
mod run_jupyter;
mod seed;
mod server;
mod session;
mod stream;

pub use config::{cores, Config, Maxima, NetworkCap, NetworkCapError, SessionConfig};
pub use listen::{Access, Endpoint};
pub use server::serve;
