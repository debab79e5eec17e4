//! The rbypass protocol stack.
//!
//! All of a stack's state lives in one shared-memory [`arena`]; protocol
//! logic is sans-IO: frames and the current time go in, frames to transmit
//! come out, so tests drive it with a virtual clock.

pub mod wire;
