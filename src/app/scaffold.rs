//! The files `gov init` writes, embedded in the binary.
