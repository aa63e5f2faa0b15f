//! The drivers of the core: each moves bytes between the outside world and
//! [`crate::pipeline::Pipeline`].

pub mod check_config;
pub mod demo;
pub mod generate;
pub mod process;
