#![allow(dead_code)]
pub mod backend;
pub mod daemon;
pub mod eventually;
pub mod fake_boa;
pub mod fake_intuit;
pub mod inproc;
pub mod nodes;
pub mod postgres;
pub mod world;
