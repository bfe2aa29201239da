//! muri: the scheduling core shared by simulate mode and the testbed.
pub mod matching;
