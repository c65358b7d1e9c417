//! Empty: the program is the `gate` binary (src/main.rs). See Cargo.toml for why this exists.
#![no_std]
