//! Integration tests: `rsandbox serve` over real sockets: the native API, SandboxFusion's
//! `/run_code` (with verl's and tinker-cookbook's payloads and the real PyPI client), the queue
//! and its limits, cancellation by disconnect, access (peer credentials, bearer tokens), socket
//! activation, SIGTERM and SIGKILL, `run --daemon`, the systemd units, and a 5,000-request soak.
//! A file per theme, below; the daemon harness is the `server` module.

// The native API: `/v1/run` reports and fetched files, 4xx answers, symlinks refused.
mod api;
// SandboxFusion's `/run_code`: verl's and tinker-cookbook's payloads, the PyPI client.
pub(crate) mod sandbox_fusion;
// The Jupyter Server kernels API with code-sandboxes and the raw protocol; browser protections.
mod jupyter;
// Load: slots and the queue (503 when full), cancellation by disconnect, a 5,000-request soak.
mod load;
// Access: bearer tokens on TCP, peer credentials and modes on the Unix socket.
mod access;
// The daemon's life: socket activation, SIGTERM, SIGKILL and restart, `run --daemon`, systemd.
mod lifecycle;
// GPUs through `/v1/run`: allocation across concurrent runs on fake GPUs.
mod gpus;
// The fork server: instances hold none of the daemon's memory; a dead one falls back to clones.
mod fork_server;
