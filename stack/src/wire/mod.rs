//! Wire formats: one module per protocol header, parse and emit with checked lengths.
