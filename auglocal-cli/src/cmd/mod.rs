//! One file per command: its flags (`Args`) and its body (`run`).

pub mod bench;
pub mod compare;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod models;
pub mod plot;
pub mod probe;
pub mod similarity;
pub mod train;
