#![allow(dead_code)]
pub mod daemon;
pub mod eventually;
pub mod fake_boa;
pub mod fake_intuit;
pub mod inproc;
pub mod postgres;
pub mod world;
