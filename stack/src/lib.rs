//! The rbypass protocol stack.
//!
//! All of a stack's state lives in one shared-memory [`arena`]; protocol
//! logic is sans-IO: frames and the current time go in, frames to transmit
//! come out, so tests drive it with a virtual clock.
//!
//! - [`arena`]: the `/dev/shm` file, its header, layout stamp and tables.
//! - [`lock`]: the stack lock (futex word with deferred work).
//! - [`pool`]: packet buffers with reference counts, and buffer queues.
//! - [`timer`]: the timer wheel.
//! - [`wire`]: header parsing and emission.
//! - [`iface`]: addresses, ARP, IPv4 input/output, ICMP.
//! - [`socket`]: the socket table and UDP sockets.
//! - [`stack`]: a process's handle ([`Stack`]) and the locked state ([`Core`]).

pub mod access;
pub mod arena;
pub mod clock;
pub mod counters;
pub mod iface;
pub mod lock;
pub mod observe;
pub mod pool;
pub mod procs;
pub mod repair;
pub mod socket;
pub mod stack;
pub mod tcp;
pub mod timer;
pub mod wire;

pub use arena::{ArenaError, StackConfig};
pub use iface::IfaceConfig;
pub use pool::{BufId, Pool};
pub use socket::{SockError, SocketId};
pub use stack::{Core, Stack, StackGuard};
